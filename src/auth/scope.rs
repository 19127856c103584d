//! What a principal may do: `submit:<type pattern>`, `read`, `cancel`, `metrics` and
//! `admin` (everything). A pattern is a command type with `*` for any run of
//! characters (`billing.*`, `*`).

/// One permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Submit commands whose type matches the pattern.
    Submit(String),
    /// Read operations, lists, batches and deliveries (of the principal's tenant).
    Read,
    /// Cancel operations (of the principal's tenant).
    Cancel,
    /// Scrape `/metrics`.
    Metrics,
    /// Every scope.
    Admin,
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need<'a> {
    Submit(&'a str),
    /// Some submit scope, whatever the type (checked per type later, once known).
    AnySubmit,
    Read,
    Cancel,
    Metrics,
    /// Only `admin` (actions across a queue, such as RunPod's purge).
    Admin,
}

impl Scope {
    /// `submit:PATTERN`, `read`, `cancel`, `metrics`, `admin`.
    pub fn parse(text: &str) -> Result<Scope, String> {
        match text.trim() {
            "read" => Ok(Scope::Read),
            "cancel" => Ok(Scope::Cancel),
            "metrics" => Ok(Scope::Metrics),
            "admin" => Ok(Scope::Admin),
            "submit" => Ok(Scope::Submit("*".into())),
            other => match other.strip_prefix("submit:") {
                Some(p) if !p.is_empty() && p.chars().all(|c| c.is_ascii_graphic()) => Ok(Scope::Submit(p.to_string())),
                _ => Err(format!("unknown scope {other:?} (submit:<type pattern>, read, cancel, metrics or admin)")),
            },
        }
    }

    fn grants(&self, need: Need<'_>) -> bool {
        match (self, need) {
            (Scope::Admin, _) => true,
            (Scope::Submit(p), Need::Submit(t)) => matches(p, t),
            (Scope::Submit(_), Need::AnySubmit) => true,
            (Scope::Read, Need::Read) | (Scope::Cancel, Need::Cancel) | (Scope::Metrics, Need::Metrics) => true,
            _ => false,
        }
    }
}

/// Whether any of `scopes` grants `need`.
pub fn allows(scopes: &[Scope], need: Need<'_>) -> bool {
    scopes.iter().any(|s| s.grants(need))
}

/// Glob match with `*` only (any run of characters, also none).
fn matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = (parts[0], &parts[1..]);
    let Some(mut left) = text.strip_prefix(first) else { return false };
    let Some((last, middle)) = rest.split_last() else { return left.is_empty() };
    for part in middle {
        match left.find(part) {
            Some(i) => left = &left[i + part.len()..],
            None => return false,
        }
    }
    left.len() >= last.len() && left.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_like_globs() {
        for (p, t, yes) in [
            ("billing.*", "billing.charge", true),
            ("billing.*", "billing.", true),
            ("billing.*", "shipping.charge", false),
            ("billing.*", "billing", false),
            ("*", "anything", true),
            ("echo", "echo", true),
            ("echo", "echo2", false),
            ("a*c*e", "abcde", true),
            ("a*c*e", "abcd", false),
            ("*.charge", "billing.charge", true),
            ("a*a", "a", false),
        ] {
            assert_eq!(matches(p, t), yes, "{p} ~ {t}");
        }
    }

    #[test]
    fn scopes_parse_and_grant() {
        let s: Vec<Scope> = ["submit:billing.*", "read"].iter().map(|t| Scope::parse(t).unwrap()).collect();
        assert!(allows(&s, Need::Submit("billing.charge")));
        assert!(!allows(&s, Need::Submit("echo")));
        assert!(allows(&s, Need::AnySubmit) && allows(&s, Need::Read));
        assert!(!allows(&s, Need::Cancel) && !allows(&s, Need::Metrics));
        assert!(allows(&[Scope::Admin], Need::Cancel));
        assert!(Scope::parse("write").is_err() && Scope::parse("submit:").is_err());
        assert_eq!(Scope::parse("submit").unwrap(), Scope::Submit("*".into()));
    }
}
