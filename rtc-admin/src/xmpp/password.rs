//! Reading a new password the way `prosodyctl adduser`/`passwd` does: on a terminal,
//! asked twice with echo off; from a pipe or file, one line.
//!
//! Echo is switched off with termios through `rustix` (already a dependency; no extra
//! crate), on the terminal that stdin is, and restored when the answer is in, also when
//! reading fails. A SIGINT (Ctrl-C) while asking ends the process the usual way and
//! leaves echo off, as most such prompts do (`stty sane` restores it); ISIG is not
//! disabled, so that Ctrl-C keeps working as people expect.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::os::fd::AsFd as _;

use anyhow::{anyhow, bail, Context as _};
use rustix::termios::{self, LocalModes, OptionalActions};

/// The new password: asked twice on a terminal, one line otherwise (a trailing `\n` or
/// `\r\n` removed). Refuses an empty password and, through SASLprep, control characters
/// (a SCRAM client would refuse them too, RFC 4013 §2.3).
pub fn new_password(jid: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = ask_hidden(&format!("Enter new password for {jid}: "))?;
        let second = ask_hidden("Retype new password: ")?;
        if first != second {
            bail!("passwords do not match; nothing changed");
        }
        first
    } else {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        strip_newline(&mut line);
        line
    };
    if password.is_empty() {
        bail!("empty password; nothing changed");
    }
    rtc_auth::scram::saslprep(&password).map_err(|e| anyhow!("unusable password: {e}"))?;
    Ok(password)
}

fn strip_newline(line: &mut String) {
    if line.ends_with('\n') {
        line.pop();
        if line.ends_with('\r') {
            line.pop();
        }
    }
}

/// Prints `prompt` on stderr and reads a line from the terminal on stdin without echo.
fn ask_hidden(prompt: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let fd = stdin.as_fd();
    let saved = termios::tcgetattr(fd).context("reading the terminal settings")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    // The newline typed at the end is still shown, so the next output starts a line.
    quiet.local_modes.insert(LocalModes::ECHONL);
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    termios::tcsetattr(fd, OptionalActions::Flush, &quiet)
        .context("switching terminal echo off")?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let restored = termios::tcsetattr(fd, OptionalActions::Now, &saved);
    read.context("reading the password")?;
    restored.context("restoring the terminal settings")?;
    strip_newline(&mut line);
    Ok(line)
}

#[cfg(test)]
mod tests {
    #[test]
    fn newlines_are_stripped() {
        for (input, out) in [
            ("pw\n", "pw"),
            ("pw\r\n", "pw"),
            ("pw", "pw"),
            ("p w \n", "p w "),
        ] {
            let mut s = input.to_owned();
            super::strip_newline(&mut s);
            assert_eq!(s, out);
        }
    }
}
