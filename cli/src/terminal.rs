//! Log text made safe for a terminal. A logged line may hold escape sequences that set the
//! window title, write the clipboard (OSC 52), draw fake hyperlinks, move the cursor, or a `\r`
//! that hides what came before it. On a terminal only colours (SGR: `ESC [ … m`) and tabs pass;
//! every other control character is shown in caret notation (`^[`, `^M`, `^?`) or as `<U+009B>`,
//! and colours are reset at the end of the line. Pipes and files get the bytes as they are.

use std::io::Write;

/// Appends `text` to `out` as a terminal should show it; `colours` keeps SGR sequences.
pub fn visible(text: &str, colours: bool, out: &mut Vec<u8>) {
    if !text.chars().any(needs_care) {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    let bytes = text.as_bytes();
    let mut coloured = false;
    let mut i = 0;
    while let Some(c) = text[i..].chars().next() {
        match c {
            '\t' => out.push(b'\t'),
            '\x1b' if colours && sgr_len(&bytes[i..]).is_some() => {
                let n = sgr_len(&bytes[i..]).unwrap_or(1);
                out.extend_from_slice(&bytes[i..i + n]);
                coloured = true;
                i += n;
                continue;
            }
            c if (c as u32) < 0x20 => out.extend_from_slice(&[b'^', c as u8 + 0x40]),
            '\x7f' => out.extend_from_slice(b"^?"),
            c if needs_care(c) => {
                let _ = write!(out, "<U+{:04X}>", c as u32);
            }
            c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
        i += c.len_utf8();
    }
    if coloured {
        out.extend_from_slice(b"\x1b[0m");
    }
}

/// `text` as [`visible`] writes it, without colours (server text on stderr).
pub fn visible_string(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    visible(text, false, &mut out);
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// C0 and C1 controls, DEL, and the bidirectional overrides that reorder what is shown.
fn needs_care(c: char) -> bool {
    (c as u32) < 0x20
        || ('\u{7f}'..='\u{9f}').contains(&c)
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// The length of an SGR sequence `ESC [ (digits ; :)* m` at the start of `b`, if it is one.
fn sgr_len(b: &[u8]) -> Option<usize> {
    if b.len() < 3 || b[0] != 0x1b || b[1] != b'[' {
        return None;
    }
    let params = b[2..]
        .iter()
        .take(64)
        .take_while(|x| x.is_ascii_digit() || **x == b';' || **x == b':')
        .count();
    if b.get(2 + params) != Some(&b'm') {
        return None;
    }
    // Conceal (8) hides text as surely as a `\r`: a sequence with it is not a colour.
    (!conceals(&b[2..2 + params])).then_some(3 + params)
}

/// Whether SGR parameters turn on conceal (8), read as terminals read them: the arguments of
/// an extended colour (`38;5;N`, `38;2;R;G;B`, likewise 48 and 58) are not attributes.
fn conceals(params: &[u8]) -> bool {
    let list: Vec<&[u8]> = params.split(|c| *c == b';').collect();
    let mut i = 0;
    while i < list.len() {
        match list[i] {
            b"38" | b"48" | b"58" => {
                i += match list.get(i + 1).copied() {
                    Some(b"5") => 3,
                    Some(b"2") => 5,
                    _ => 1,
                };
            }
            b"8" | b"08" => return true,
            _ => i += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(s: &str) -> String {
        let mut out = Vec::new();
        visible(s, true, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn concealed_text_is_shown_not_hidden() {
        assert_eq!(shown("a\x1b[8mhidden\x1b[0m"), "a^[[8mhidden\x1b[0m\x1b[0m");
        assert_eq!(shown("\x1b[1;8mx"), "^[[1;8mx");
        // Palette colour 8 (grey) is a colour, not conceal.
        assert_eq!(shown("\x1b[38;5;8mgrey"), "\x1b[38;5;8mgrey\x1b[0m");
        assert_eq!(shown("\x1b[48;2;8;8;8mbg"), "\x1b[48;2;8;8;8mbg\x1b[0m");
    }

    #[test]
    fn only_colours_and_tabs_reach_the_terminal() {
        assert_eq!(shown("plain text ünïcode"), "plain text ünïcode");
        assert_eq!(
            shown("\x1b[1;31mred\x1b[0m\tnext"),
            "\x1b[1;31mred\x1b[0m\tnext\x1b[0m"
        );
        assert_eq!(shown("\x1b]0;pwned\x07x"), "^[]0;pwned^Gx", "window title");
        assert_eq!(
            shown("\x1b]52;c;ZXZpbA==\x07"),
            "^[]52;c;ZXZpbA==^G",
            "clipboard"
        );
        assert_eq!(
            shown("\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\"),
            "^[]8;;http://evil^[\\link^[]8;;^[\\",
            "hyperlink"
        );
        assert_eq!(shown("safe\rforged"), "safe^Mforged");
        assert_eq!(shown("a\nb"), "a^Jb", "one event is one line");
        assert_eq!(shown("\x1b[2J\x1b[H"), "^[[2J^[[H", "cursor and screen");
        assert_eq!(shown("\u{9b}31m \x7f"), "<U+009B>31m ^?");
        assert_eq!(shown("abc\u{202e}fed"), "abc<U+202E>fed");
        let mut out = Vec::new();
        visible("\x1b[31mred", false, &mut out);
        assert_eq!(out, b"^[[31mred", "no colours on stderr");
    }
}
