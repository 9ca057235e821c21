//! A secret read from the controlling terminal, with echo turned off before
//! the prompt is shown (as getpass(3) does), so typing ahead is never echoed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};

use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
use zeroize::Zeroizing;

/// Prompts on `/dev/tty` and reads one line without echo; the terminal's
/// settings are restored whatever happens.
pub fn read_secret(prompt: &str) -> std::io::Result<Zeroizing<String>> {
    let tty = OpenOptions::new().read(true).write(true).open("/dev/tty")?;
    let saved = tcgetattr(&tty)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    // Flush: input typed (and echoed) before echo went off is discarded.
    tcsetattr(&tty, OptionalActions::Flush, &quiet)?;
    let line = prompt_and_read(&tty, prompt);
    let restored = tcsetattr(&tty, OptionalActions::Now, &saved);
    let line = line?;
    restored?;
    Ok(line)
}

fn prompt_and_read(mut tty: &File, prompt: &str) -> std::io::Result<Zeroizing<String>> {
    tty.write_all(prompt.as_bytes())?;
    tty.flush()?;
    // Byte by byte, so no buffer outside `bytes` ever holds the secret.
    let mut bytes = Zeroizing::new(Vec::new());
    let mut b = [0u8; 1];
    loop {
        match tty.read(&mut b)? {
            0 => break,
            _ if b[0] == b'\n' => break,
            _ => bytes.push(b[0]),
        }
    }
    zeroize::Zeroize::zeroize(&mut b);
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the passphrase is not UTF-8",
        )
    })?;
    Ok(Zeroizing::new(text.to_owned()))
}
