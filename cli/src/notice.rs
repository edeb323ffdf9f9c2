//! Messages for people on stderr: progress notices only when stderr is a terminal, errors
//! always; colour only on a terminal and never with `NO_COLOR`.

use std::io::IsTerminal;

#[derive(Debug, Clone, Copy)]
pub struct Notices {
    terminal: bool,
    colour: bool,
    verbose: u8,
}

impl Notices {
    pub fn new(verbose: u8) -> Notices {
        let terminal = std::io::stderr().is_terminal();
        let colour = terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Notices {
            terminal,
            colour,
            verbose,
        }
    }

    /// `msg` as it may be shown: on a terminal, control characters of server text visible.
    fn safe<'a>(&self, msg: &'a str) -> std::borrow::Cow<'a, str> {
        if self.terminal {
            crate::terminal::visible_string(msg).into()
        } else {
            msg.into()
        }
    }

    /// A progress notice (reconnecting, waiting): only for a person watching.
    pub fn info(&self, msg: &str) {
        if self.terminal || self.verbose > 0 {
            let msg = self.safe(msg);
            if self.colour {
                eprintln!("\x1b[2m{msg}\x1b[0m");
            } else {
                eprintln!("{msg}");
            }
        }
    }

    /// Something the user must always see (the id of a started execution).
    pub fn always(&self, msg: &str) {
        let msg = self.safe(msg);
        eprintln!("{msg}");
    }

    pub fn error(&self, msg: &str) {
        let msg = self.safe(msg);
        if self.colour {
            eprintln!("\x1b[31merror:\x1b[0m {msg}");
        } else {
            eprintln!("error: {msg}");
        }
    }
}
