//! Tests of the dense page format: pages written and read back, in pieces and in runs of any
//! size, damaged bodies refused, timestamps at the edges, and `Accept` negotiation.

use super::*;
use crate::model::Status;

fn page(last_index: u64) -> LogsResponse {
    LogsResponse {
        execution_id: "abc".into(),
        status: Status::Running,
        events: Vec::new(),
        last_index,
        has_more: true,
        final_index: None,
        exit_code: None,
        websocket_url: Some("ws://x/ws?token=t".into()),
    }
}

fn event(index: u64, message: &str) -> LogEvent {
    LogEvent {
        index,
        event_id: format!("id-{index}"),
        timestamp: 1_700_000_000_000 + index as i64,
        message: message.into(),
    }
}

/// A body of `events` in runs of `per_run`, as a store that packs them would send it.
fn in_runs(meta: &LogsResponse, events: &[LogEvent], per_run: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in events.chunks(per_run) {
        let mut run = RunBuilder::default();
        for e in chunk {
            run.push(e.timestamp, e.message.as_bytes());
        }
        let before = out.len();
        run.append_to(&mut out);
        assert_eq!(out.len() - before, run.encoded_len());
    }
    body(meta, out).unwrap().into_bytes()
}

fn read_back(parsed: &LinesPage<&[u8]>) -> Vec<(i64, Vec<u8>)> {
    parsed
        .records()
        .map(|r| (parsed.timestamp(&r), parsed.message(&r).to_vec()))
        .collect()
}

fn expected(events: &[LogEvent]) -> Vec<(i64, Vec<u8>)> {
    events
        .iter()
        .map(|e| (e.timestamp, e.message.as_bytes().to_vec()))
        .collect()
}

#[test]
fn a_page_reads_back_as_it_was_written() {
    let events = vec![
        event(8, "plain"),
        event(9, "two\nlines and a \"quote\""),
        event(10, ""),
        event(11, "é 日本 🙂 \u{1b}[1m"),
    ];
    let body = render(&page(11), &events);
    let parsed = LinesPage::parse(body.as_bytes()).unwrap();
    assert_eq!(parsed.meta, page(11));
    assert_eq!(parsed.first_index(), 8);
    assert_eq!(parsed.len(), 4);
    assert_eq!(read_back(&parsed), expected(&events));
    // The run's messages are the lines as printed plain, in one piece.
    assert_eq!(parsed.runs().len(), 1);
    let plain: String = events.iter().map(|e| format!("{}\n", e.message)).collect();
    assert_eq!(parsed.runs()[0].messages(parsed.body()), plain.as_bytes());
    for per_run in [1, 2, 3] {
        let body = in_runs(&page(11), &events, per_run);
        let parsed = LinesPage::parse(body.as_slice()).unwrap();
        assert_eq!(parsed.runs().len(), events.len().div_ceil(per_run));
        assert_eq!(read_back(&parsed), expected(&events), "runs of {per_run}");
        let firsts: Vec<usize> = parsed.runs().iter().map(|r| r.first).collect();
        assert_eq!(firsts, (0..4).step_by(per_run).collect::<Vec<_>>());
    }
}

#[test]
fn a_page_fed_in_pieces_reads_as_a_whole() {
    let events: Vec<LogEvent> = (1..=40)
        .map(|i| event(i, &"x\ny ".repeat(i as usize)))
        .collect();
    let body = in_runs(&page(40), &events, 7);
    let whole = LinesPage::parse(body.as_slice()).unwrap();
    for piece in [1, 7, 64, 1000] {
        let mut reader = LinesReader::default();
        for end in (piece..body.len()).step_by(piece) {
            reader.feed(&body[..end]);
        }
        let fed = reader.finish(body.as_slice()).unwrap();
        assert_eq!(fed.runs(), whole.runs(), "pieces of {piece}");
        assert_eq!(fed.meta, whole.meta);
    }
    assert_eq!(read_back(&whole), expected(&events));
}

#[test]
fn runs_that_are_not_utf8_are_refused_with_a_sentence() {
    let mut runs = Vec::new();
    push_run(&mut runs, 1, b"5 2\n", b"\xff\xfe\n");
    let e = body(&page(1), runs).unwrap_err();
    assert!(e.contains("not UTF-8") && e.contains("abc"), "{e}");
}

#[test]
fn an_empty_page_has_its_json_line_only() {
    let body = render(&page(5), &[]);
    assert_eq!(body.lines().count(), 1);
    let parsed = LinesPage::parse(body.as_bytes()).unwrap();
    assert!(parsed.is_empty());
    assert_eq!(parsed.first_index(), 6);
}

#[test]
fn a_damaged_body_is_refused_not_misread() {
    let events = [event(1, "one"), event(2, "two")];
    let body = render(&page(2), &events);
    for cut in [body.len() - 1, body.len() - 3, body.find('\n').unwrap() + 1] {
        assert!(
            LinesPage::parse(&body.as_bytes()[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    // Heads whose lengths disagree with the messages, though the heads count right and
    // every part ends with a newline: refused when framed, whatever prints the page.
    for (from, to) in [(" 3\n", " 2\n"), (" 3\n", " 4\n"), (" 3\n", " 9\n")] {
        let wrong_length = body.replacen(from, to, 1);
        assert!(LinesPage::parse(wrong_length.as_bytes()).is_err(), "{to:?}");
    }
    let swapped = body.replacen("one\ntwo", "on\netwo", 1);
    assert!(LinesPage::parse(swapped.as_bytes()).is_err());
    let hostile = b"2 8 4\n0 9\n0 1\na\nb\n{}\n";
    assert!(LinesPage::parse(&hostile[..]).is_err());
    let one_for_two = b"1 4 6\n0 0\nabcde\n{}\n";
    assert!(LinesPage::parse(&one_for_two[..]).is_err());
    // A header announcing more or fewer heads than there are.
    for header in ["3 ", "1 "] {
        let wrong_count = body.replacen("2 ", header, 1);
        assert!(
            LinesPage::parse(wrong_count.as_bytes()).is_err(),
            "{header}"
        );
    }
    assert!(LinesPage::parse(body.replacen("2 ", "0 ", 1).as_bytes()).is_err());
    assert!(LinesPage::parse(body.replacen("2 ", "-2 ", 1).as_bytes()).is_err());
    assert!(LinesPage::parse(&b"99999999999999999999 1 1\n"[..]).is_err());
    assert!(LinesPage::parse(&b"not json\n"[..]).is_err());
    let top = LinesPage::parse(render(&page(u64::MAX), &[event(9, "x")]).into_bytes()).unwrap();
    assert_eq!(top.first_index(), u64::MAX);
    let more_than_promised = render(&page(1), &events);
    assert!(LinesPage::parse(more_than_promised.as_bytes()).is_err());
}

#[test]
fn timestamps_read_back_at_the_edges_of_i64() {
    for t in [i64::MIN, i64::MAX, -1, 0, 1_700_000_000_000_000_000] {
        let mut run = RunBuilder::default();
        run.push(t, b"abc");
        let mut out = Vec::new();
        run.append_to(&mut out);
        assert_eq!(events_of(&out).unwrap(), [(t, &b"abc"[..])], "{t}");
    }
    let too_long = b"1 27 4\n12345678901234567890 3\nabc\n";
    assert!(events_of(too_long).is_err());
    let too_large = b"1 26 4\n9223372036854775808 3\nabc\n";
    assert!(events_of(too_large).is_err());
    assert!(events_of(b"1 4 4\n5 \nabc\n").is_err());
    // Empty numbers, even where an empty message would fit.
    assert!(events_of(b"1 3 1\n5 \n\n").is_err());
    assert!(events_of(b"1 3 1\n 0\n\n").is_err());
    assert!(events_of(b"2 7 2\n5 0\n+ 0\n\n\n").is_err());
    // Differences of 18 digits that add up past i64::MAX (or MIN) at the ninth; eight fit.
    for big in ["999999999999999999", "-999999999999999999"] {
        let run = |differences: usize| {
            let heads = format!("{big} 0\n") + &format!("+{big} 0\n").repeat(differences);
            let count = differences + 1;
            format!(
                "{count} {} {count}\n{heads}{}",
                heads.len(),
                "\n".repeat(count)
            )
        };
        assert!(events_of(run(9).as_bytes()).is_err(), "{big}");
        assert_eq!(events_of(run(8).as_bytes()).unwrap().len(), 9, "{big}");
    }
    // A negative difference brings the sum back: 8e18, 7e18, then 9e18, never past MAX.
    let up = "+999999999999999999 0\n";
    let heads = "999999999999999999 0\n".to_string()
        + &up.repeat(7)
        + "+-999999999999999999 0\n"
        + &up.repeat(2);
    let run = format!("11 {} 11\n{heads}{}", heads.len(), "\n".repeat(11));
    let read = events_of(run.as_bytes()).unwrap();
    assert_eq!(read.last().unwrap().0, 8_999_999_999_999_999_991);
}

#[test]
fn later_timestamps_travel_as_differences_and_read_back_whole() {
    let timestamps = [
        1_700_000_000_000,
        1_700_000_000_000,
        1_700_000_000_007,
        1_699_999_999_990,
        i64::MAX,
        i64::MIN,
        -1,
        0,
    ];
    let mut run = RunBuilder::default();
    for (i, t) in timestamps.iter().enumerate() {
        run.push(*t, format!("line {i}").as_bytes());
    }
    let mut out = Vec::new();
    run.append_to(&mut out);
    let text = String::from_utf8(out.clone()).unwrap();
    // Whole only where the difference does not fit an i64 (MIN after MAX).
    assert!(text.contains("\n+0 6\n+7 6\n+-17 6\n"), "{text}");
    assert!(
        text.contains("\n-9223372036854775808 6\n+9223372036854775807 6\n+1 6\n"),
        "{text}"
    );
    let read: Vec<i64> = events_of(&out).unwrap().iter().map(|(t, _)| *t).collect();
    assert_eq!(read, timestamps);

    // Any stretch of the run, sent as a run of its own, reads back the same.
    let framed = parse_run(&out, 0, 0).unwrap().unwrap();
    let records: Vec<Record> = framed.records(&out).collect();
    let heads_end = records[0].start;
    for from in 0..records.len() {
        for to in from + 1..=records.len() {
            let mut part = Vec::new();
            let heads_to = records.get(to).map_or(heads_end, |r| r.head());
            push_part(&mut part, &out, &records[from..to], heads_to);
            let read: Vec<i64> = events_of(&part).unwrap().iter().map(|(t, _)| *t).collect();
            assert_eq!(read, timestamps[from..to], "{from}..{to}");
        }
    }

    // A run cannot start relative, nor a difference overflow.
    assert!(events_of(b"1 5 2\n+1 1\na\n").is_err());
    assert!(events_of(b"2 27 4\n9223372036854775807 1\n+1 1\na\nb\n").is_err());
    assert!(events_of(b"2 11 4\n5 1\n++1 1\na\nb\n").is_err());
}

proptest::proptest! {
    /// Framing's fast check answers as walking every record does, for runs damaged
    /// anywhere: heads, messages, or the count in the header.
    #[test]
    fn the_fast_check_of_heads_agrees_with_walking_them(
        lines in proptest::collection::vec(
            (
                // Mostly steps of a few digits; now and then one of 18 or 19 (which
                // the fast check leaves to the walk).
                proptest::prop_oneof![
                    8 => proptest::sample::select(vec![0i64, 1, -3, 12, 1_700_000_000_000]),
                    1 => proptest::sample::select(vec![i64::MAX, i64::MIN, 999_999_999_999_999_999]),
                ],
                proptest::collection::vec(proptest::sample::select(b"ab 7\n".to_vec()), 0..12),
            ),
            1..8,
        ),
        damage in proptest::collection::vec(
            (
                proptest::num::usize::ANY,
                proptest::sample::select(b"+-0123456789 \nx".to_vec()),
                0u8..3,
            ),
            0..4,
        ),
        count_off in -1i64..=1,
        split_off in -2i64..=2,
        tail in proptest::collection::vec(proptest::sample::select(b"+-0123456789 \nx{}".to_vec()), 0..6),
    ) {
        let mut run = RunBuilder::default();
        let mut timestamp = 0i64;
        for (step, message) in &lines {
            timestamp = timestamp.wrapping_add(*step);
            run.push(timestamp, message);
        }
        let mut body = run.encoded();
        let framed = parse_run(&body, 0, 0).unwrap().unwrap();
        proptest::prop_assert!(framed.heads_agree(&body) && framed.records_agree(&body));
        // Damage after the header, the run keeping its bounds: a byte replaced, one taken
        // out (what follows shifts left) or one put in (what follows shifts right), the
        // body keeping its length. Then what follows the run on a page (the next run, the
        // JSON line), and a header whose heads or messages are a little longer or shorter.
        let after_header = framed.heads;
        for (at, byte, how) in damage {
            let at = after_header + at % (body.len() - after_header);
            match how {
                0 => body[at] = byte,
                1 => {
                    body.remove(at);
                    body.push(byte);
                }
                _ => {
                    body.insert(at, byte);
                    body.pop();
                }
            }
        }
        body.extend_from_slice(&tail);
        let messages = framed
            .messages
            .saturating_add_signed(split_off as isize)
            .clamp(framed.heads, framed.end);
        let run = Run {
            count: framed.count.saturating_add_signed(count_off as isize),
            messages,
            ..framed
        };
        proptest::prop_assert_eq!(run.heads_agree(&body), run.records_agree(&body));
    }
}

#[test]
fn accept_headers_are_matched_by_media_type() {
    assert!(accepts_lines(Some(LINES_CONTENT_TYPE)));
    assert!(accepts_lines(Some(
        "application/json;q=0.5, application/vnd.runvoy.lines.v2"
    )));
    assert!(!accepts_lines(Some("application/json")));
    assert!(!accepts_lines(Some("application/vnd.runvoy.lines")));
    assert!(!accepts_lines(Some("application/vnd.runvoy.lines.v2;q=0")));
    assert!(accepts_lines(Some(
        "application/vnd.runvoy.lines.v2; q=0.1"
    )));
    assert!(!accepts_lines(None));
}
