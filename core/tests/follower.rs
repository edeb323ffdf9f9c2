//! The client algorithm's `Follower`: lines printed once and in order, gaps reported, runs
//! released only where they continue the sequence.

use runvoy_core::client::Follower;
use runvoy_core::{LogEvent, Status};

#[test]
fn follower_prints_once_in_order_and_reports_gaps() {
    let ev = |i: u64| LogEvent {
        index: i,
        event_id: i.to_string(),
        timestamp: 0,
        message: String::new(),
    };
    let mut f = Follower::new(0);
    let a = f.accept(vec![ev(2), ev(1), ev(1)]);
    assert_eq!(
        a.print.iter().map(|e| e.index).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let a = f.accept(vec![ev(5)]);
    assert!(a.gap && a.print.is_empty());
    f.terminal(Status::Stopped, None, 3);
    assert!(!f.is_done());
    f.accept(vec![ev(3)]);
    assert_eq!((f.is_done(), f.exit_code()), (true, Some(1)));
}

#[test]
fn a_run_releases_only_what_continues_the_sequence() {
    let mut f = Follower::new(0);
    let r = f.accept_run(1, 3);
    assert_eq!((r.skip, r.take, r.gap, f.last()), (0, 3, false, 3));
    // Overlapping what was printed: only the new tail.
    let r = f.accept_run(2, 4);
    assert_eq!((r.skip, r.take, r.gap, f.last()), (2, 2, false, 5));
    // Wholly printed already.
    let r = f.accept_run(1, 5);
    assert_eq!((r.skip, r.take, r.gap, f.last()), (5, 0, false, 5));
    // Beyond a hole: nothing, and a gap.
    let r = f.accept_run(7, 2);
    assert_eq!((r.skip, r.take, r.gap, f.last()), (0, 0, true, 5));
    let r = f.accept_run(9, 0);
    assert_eq!((r.take, r.gap), (0, false));
    f.terminal(Status::Succeeded, Some(0), 6);
    f.accept_run(6, 1);
    assert_eq!(f.exit_code(), Some(0));
}
