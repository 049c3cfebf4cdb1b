//! Reading a new password: from stdin for scripts, or asked twice on a terminal as Synapse's
//! `register_new_matrix_user` does.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, bail};

pub fn read_new_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        let password = line.trim_end_matches(['\n', '\r']).to_owned();
        if password.is_empty() {
            bail!("no password on stdin");
        }
        return Ok(password);
    }
    if !std::io::stdin().is_terminal() {
        bail!("stdin is not a terminal: pass --password-stdin and pipe the password in");
    }
    let password = rpassword::prompt_password("Password: ")?;
    if password.is_empty() {
        bail!("the password must not be empty");
    }
    let again = rpassword::prompt_password("Confirm password: ")?;
    if password != again {
        bail!("the passwords do not match");
    }
    Ok(password)
}
