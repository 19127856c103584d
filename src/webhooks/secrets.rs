//! Secret-bearing flags (`--webhook-secret`, `--ouro-webhook-token`), parsed so that
//! no argument error, `--help` text or `{:?}` ever shows a value.
//!
//! clap quotes a rejected value in its error ("invalid value 'whsec_...' for
//! '--webhook-secret'"), and prints an env var's current value in `--help`; both end
//! up in terminals, CI logs and bug reports. So secrets are parsed by
//! [`SecretParser`], whose errors say which flag and why, not what, and their args
//! hide env values.

use std::ffi::OsStr;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;

use super::signing::Secret;

/// clap's parser for a `whsec_` signing secret: a malformed one is refused at
/// start, with the reason and without its text.
#[derive(Debug, Clone, Copy)]
pub struct SecretParser;

impl TypedValueParser for SecretParser {
    type Value = Secret;

    fn parse_ref(&self, cmd: &clap::Command, arg: Option<&clap::Arg>, value: &OsStr) -> Result<Secret, clap::Error> {
        let flag = arg.and_then(|a| a.get_long()).unwrap_or("webhook-secret");
        let refuse = |why: &str| {
            let message = format!("a --{flag} value is malformed: {why} (its text is not shown: it is a secret)\n");
            clap::Error::raw(ErrorKind::ValueValidation, message).with_cmd(cmd)
        };
        let text = value.to_str().ok_or_else(|| refuse("it is not valid UTF-8"))?;
        text.parse::<Secret>().map_err(|e| refuse(&e.to_string()))
    }
}

/// A secret that is passed on as it is (a token sent as a header): `Debug` shows
/// only that there is one.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(String);

impl SecretText {
    /// The text itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText(..)")
    }
}

impl From<&str> for SecretText {
    fn from(text: &str) -> Self {
        SecretText(text.to_string())
    }
}

impl From<String> for SecretText {
    fn from(text: String) -> Self {
        SecretText(text)
    }
}

impl std::str::FromStr for SecretText {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(SecretText(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Flags {
        #[arg(long = "webhook-secret", value_parser = SecretParser)]
        secrets: Vec<Secret>,
        #[arg(long)]
        token: Option<SecretText>,
    }

    #[test]
    fn malformed_secrets_are_refused_without_their_text() {
        for (bad, why) in [
            ("S3cr3tNoPrefix", "does not start with whsec_"),
            ("whsec_S3cr3t!!!notbase64", "not base64"),
            ("whsec_", "empty"),
        ] {
            let e = Flags::try_parse_from(["t", "--webhook-secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "--webhook-secret", bad]).unwrap_err();
            let shown = e.render().to_string();
            assert!(shown.contains("--webhook-secret") && shown.contains(why), "{shown}");
            assert!(!shown.contains("S3cr3t") && !shown.contains("MfKQ9r8"), "{shown}");
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        let flags = Flags::try_parse_from(["t", "--webhook-secret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "--token", "T0ken"]).unwrap();
        let shown = format!("{flags:?}");
        assert!(!shown.contains("MfKQ9r8") && !shown.contains("T0ken"), "{shown}");
        assert_eq!(flags.token.as_ref().map(SecretText::expose), Some("T0ken"));
    }
}
