//! Query options as kubo's HTTP API takes them: `arg` repeated for several
//! arguments, booleans as Go's `strconv.ParseBool`, durations as Go's
//! `time.ParseDuration`, and per command the set of options kubo defines.

use std::time::Duration;

use crate::Error;

/// Options every kubo command takes (kubo's root command), with their
/// one-letter aliases. Over HTTP kubo reads `timeout`, `enc` and
/// `stream-channels`; the rest only mean something to its CLI.
const GLOBAL: &[&str] = &[
    "arg",
    "timeout",
    "enc",
    "encoding",
    "stream-channels",
    "offline",
    "cid-base",
    "upgrade-cidv0-in-output",
    "repo-dir",
    "config-file",
    "config",
    "c",
    "debug",
    "D",
    "help",
    "h",
    "local",
    "L",
    "api",
    "api-auth",
];

/// How a command treats one of kubo's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opt {
    /// Done as kubo does it (the handler reads it).
    Honoured,
    /// Accepted and without effect here: CLI-side output control, directory
    /// walking a client does itself, DHT announcements the engine never makes.
    Harmless,
    /// Refused unless absent or equal to this value (its kubo default): the
    /// engine cannot do what it asks.
    OnlyDefault(&'static str),
}

/// Query options. kubo repeats `arg` for several arguments.
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<String>) -> Query {
        Query(
            form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub fn args(&self) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == "arg")
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean option, spelled as Go's `strconv.ParseBool` accepts it.
    pub fn flag(&self, key: &str, default: bool) -> Result<bool, Error> {
        match self.get(key) {
            None | Some("") => Ok(default),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
            Some(v) => Err(Error::BadArg(format!(
                "invalid value {v:?} for option {key:?}"
            ))),
        }
    }

    /// An integer option (Go's `strconv.ParseInt`, base 10).
    pub fn int(&self, key: &str) -> Result<Option<i64>, Error> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| Error::BadArg(format!("invalid value {v:?} for option {key:?}"))),
        }
    }

    /// Every `arg` as a CID (none is fine).
    pub fn cids(&self) -> Result<Vec<ipld_core::cid::Cid>, Error> {
        self.args()
            .into_iter()
            .map(crate::engine::parse_cid)
            .collect()
    }

    /// Every `arg` as a CID, at least one: the argument is called `name`.
    pub fn some_cids(&self, name: &str) -> Result<Vec<ipld_core::cid::Cid>, Error> {
        let cids = self.cids()?;
        if cids.is_empty() {
            return Err(Error::BadArg(format!("argument \"{name}\" is required")));
        }
        Ok(cids)
    }

    pub fn one_arg(&self, name: &str) -> Result<&str, Error> {
        self.args()
            .first()
            .copied()
            .ok_or_else(|| Error::BadArg(format!("argument \"{name}\" is required")))
    }

    /// kubo's global `timeout` option, a Go duration such as `30s` or `1m30s`.
    pub fn timeout(&self) -> Result<Option<Duration>, Error> {
        self.get("timeout").map(parse_go_duration).transpose()
    }

    /// Refuses an option `known` does not list (kubo's CLI message), and one
    /// listed as [`Opt::OnlyDefault`] with another value. One-letter aliases
    /// are given in `known` under their own letter.
    pub fn check(&self, known: &[(&str, Opt)]) -> Result<(), Error> {
        for (key, value) in &self.0 {
            if GLOBAL.contains(&key.as_str()) {
                continue;
            }
            match known.iter().find(|(k, _)| k == key) {
                None => return Err(Error::BadArg(format!("unknown option {key:?}"))),
                Some((_, Opt::OnlyDefault(default))) => {
                    let same = value.is_empty()
                        || value == default
                        || (is_bool(default) && is_bool(value) && truth(value) == truth(default));
                    if !same {
                        return Err(Error::BadArg(format!(
                            "option {key:?} is not supported by the built-in engine"
                        )));
                    }
                }
                Some(_) => {}
            }
        }
        if let Some(enc) = self.get("enc").or(self.get("encoding"))
            && enc != "json"
        {
            return Err(Error::BadArg(format!(
                "encoding {enc:?} is not supported by the built-in engine (only json)"
            )));
        }
        for key in ["cid-base", "upgrade-cidv0-in-output"] {
            if self.get(key).is_some_and(|v| !v.is_empty() && v != "false") {
                return Err(Error::BadArg(format!(
                    "option {key:?} is not supported by the built-in engine"
                )));
            }
        }
        Ok(())
    }
}

fn is_bool(v: &str) -> bool {
    matches!(
        v,
        "1" | "t" | "T" | "true" | "TRUE" | "True" | "0" | "f" | "F" | "false" | "FALSE" | "False"
    )
}

fn truth(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// Go's `time.ParseDuration`: an optional sign, then one or more decimal
/// numbers with a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`), as in
/// `1h30m`, `1.5s` or `500ms`; `0` alone is allowed. Negative durations are
/// refused (kubo would time out at once).
pub fn parse_go_duration(s: &str) -> Result<Duration, Error> {
    let bad = || {
        Error::BadArg(format!(
            "invalid timeout {s:?}: expected a duration such as 500ms, 30s or 1m30s"
        ))
    };
    let rest = s.strip_prefix('+').unwrap_or(s);
    if rest.starts_with('-') {
        return Err(Error::BadArg(format!(
            "invalid timeout {s:?}: a timeout cannot be negative"
        )));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = rest;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let num = &rest[..num_len];
        // Go wants a digit on at least one side of the point.
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(bad());
        }
        let n: f64 = num.parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += n * nanos;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total / 1e9).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_go_does() {
        let ok = [
            ("0", Duration::ZERO),
            ("30s", Duration::from_secs(30)),
            ("1m30s", Duration::from_secs(90)),
            ("500ms", Duration::from_millis(500)),
            ("1.5h", Duration::from_secs(5400)),
            ("2h45m10s", Duration::from_secs(2 * 3600 + 45 * 60 + 10)),
            ("+5s", Duration::from_secs(5)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            (".5s", Duration::from_millis(500)),
            ("1.s", Duration::from_secs(1)),
            ("10000ms", Duration::from_secs(10)),
        ];
        for (s, want) in ok {
            let got = parse_go_duration(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert!(
                got.abs_diff(want) < Duration::from_micros(1),
                "{s}: {got:?} != {want:?}"
            );
        }
        for s in [
            "", "30", "s", "1x", "1m30", "abc", "1..5s", ".s", "-1s", "1 s", "1S", "5sec",
        ] {
            let err = parse_go_duration(s).expect_err(s).to_string();
            assert!(err.contains(&format!("{s:?}")), "{s}: {err}");
        }
    }

    #[test]
    fn unknown_options_are_refused_and_defaults_pass() {
        let known = [
            ("pin", Opt::Honoured),
            ("trickle", Opt::OnlyDefault("false")),
        ];
        let q = |s: &str| Query::parse(Some(s.to_string()));
        assert!(
            q("pin=true&trickle=false&timeout=1s&stream-channels=true")
                .check(&known)
                .is_ok()
        );
        assert!(q("trickle=0&arg=x").check(&known).is_ok());
        let err = q("foo=1").check(&known).unwrap_err().to_string();
        assert_eq!(err, r#"unknown option "foo""#);
        let err = q("trickle=true").check(&known).unwrap_err().to_string();
        assert!(err.contains("trickle"), "{err}");
        assert!(q("enc=text").check(&known).is_err());
        assert!(q("cid-base=base32").check(&known).is_err());
    }
}
