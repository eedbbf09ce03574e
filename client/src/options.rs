//! Per-request options: how many replicas must answer, how long to wait,
//! whether to fsync and whether fallbacks may stand in for down primaries.
//!
//! The HTTP API takes them as query parameters (`r`, `w`, `pr`, `pw`,
//! `timeout`, `sync`, `sloppy`, `returnbody`), so they are parsed from strings
//! ([`RequestOptions::parse`]) and then resolved against the bucket's
//! replication factor N ([`RequestOptions::resolve`]). Both steps refuse bad
//! input before any work starts, each with an [`OptionsError`] that has a
//! stable [`code`](OptionsError::code).
//!
//! | option    | values                                            | default   |
//! |-----------|---------------------------------------------------|-----------|
//! | `r`       | an integer in 1..=N, or `one`, `quorum`, `all`    | `quorum`  |
//! | `w`       | an integer in 1..=N, or `one`, `quorum`, `all`    | `quorum`  |
//! | `pr`      | an integer in 0..=r, or `one`, `quorum`, `all`    | `0`       |
//! | `pw`      | an integer in 0..=w, or `one`, `quorum`, `all`    | `0`       |
//! | `timeout` | milliseconds in 1..=[`MAX_TIMEOUT_MS`]            | [`DEFAULT_TIMEOUT_MS`] |
//! | `sync`    | `true` or `false`                                 | `false`   |
//! | `sloppy`  | `true` or `false`                                 | `true`    |
//! | `returnbody` | `true` or `false`: a write answers like a read (the key's siblings and their context), as Riak's `returnbody`; `PUT` only | `false` |
//!
//! Words (`one`, `quorum`, `all`, `true`, `false`) are case-insensitive;
//! option names are not. `quorum` is a majority of N: `N / 2 + 1`. Every
//! count is held against N first (`quorum_above_n`, naming the first of `r`,
//! `w`, `pr`, `pw` above N), and only then `pr` against `r` (`pr_above_r`)
//! and `pw` against `w` (`pw_above_w`). All
//! options are validated on every request, whichever of them the request
//! uses, so a mistyped `w` on a get is reported rather than ignored.
//! `returnbody` is the exception: only a `PUT` takes it, and a get, delete
//! or preference list given it is refused ([`RequestOptions::parse_for`],
//! [`RequestOptions::check_for`]) with `unknown_option`, since a delete
//! answering like a read would say `404` whether or not it deleted
//! something.

use std::fmt;

/// The timeout of a request that does not set one, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// The longest timeout a request may ask for, in milliseconds (two minutes).
pub const MAX_TIMEOUT_MS: u64 = 120_000;

/// The most characters of a client's input echoed back in an error.
const MAX_ECHO_CHARS: usize = 64;

/// A replica count as the client wrote it, before N is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quorum {
    /// `one`: 1.
    One,
    /// `quorum`: a majority of N, `N / 2 + 1`.
    Majority,
    /// `all`: N.
    All,
    /// An explicit count.
    Count(u32),
}

impl Quorum {
    /// The count this stands for when the replication factor is `n`.
    pub fn resolve(self, n: usize) -> usize {
        match self {
            Quorum::One => 1,
            Quorum::Majority => n / 2 + 1,
            Quorum::All => n,
            Quorum::Count(count) => count as usize,
        }
    }

    /// Parses an integer or a word; `option` names the parameter in errors.
    fn parse(option: &'static str, value: &str) -> Result<Quorum, OptionsError> {
        if value.eq_ignore_ascii_case("one") {
            Ok(Quorum::One)
        } else if value.eq_ignore_ascii_case("quorum") {
            Ok(Quorum::Majority)
        } else if value.eq_ignore_ascii_case("all") {
            Ok(Quorum::All)
        } else if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            value
                .parse::<u32>()
                .map(Quorum::Count)
                .map_err(|_| OptionsError::Overflow {
                    option,
                    value: echo(value),
                })
        } else {
            Err(OptionsError::InvalidQuorum {
                option,
                value: echo(value),
            })
        }
    }
}

impl Quorum {
    /// [`Quorum::parse`], refusing a count of 0: `r` and `w` need at least
    /// one replica whatever N is.
    fn parse_nonzero(option: &'static str, value: &str) -> Result<Quorum, OptionsError> {
        match Quorum::parse(option, value)? {
            Quorum::Count(0) => Err(OptionsError::ZeroQuorum { option }),
            quorum => Ok(quorum),
        }
    }
}

impl std::str::FromStr for Quorum {
    type Err = OptionsError;

    /// Parses `one`, `quorum`, `all` (any case) or a non-negative integer,
    /// as the `r` option would.
    fn from_str(value: &str) -> Result<Quorum, OptionsError> {
        Quorum::parse("r", value)
    }
}

impl serde::Serialize for Quorum {
    /// As its display form: `"one"`, `"quorum"`, `"all"` or `"2"`.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Quorum {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Quorum, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Quorum::One => f.write_str("one"),
            Quorum::Majority => f.write_str("quorum"),
            Quorum::All => f.write_str("all"),
            Quorum::Count(count) => write!(f, "{count}"),
        }
    }
}

/// The options of one request as the client gave them.
///
/// Serialized (for the QUIC client protocol) as a map of the query
/// parameter names with the same values: `{"r": "quorum", "w": "2",
/// "timeout": 10000, "sync": false, …}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RequestOptions {
    pub r: Quorum,
    pub w: Quorum,
    pub pr: Quorum,
    pub pw: Quorum,
    #[serde(rename = "timeout")]
    pub timeout_ms: u64,
    /// Each write acknowledgement means the replica fsynced the write.
    pub sync: bool,
    /// Fallbacks may take writes for down primaries.
    pub sloppy: bool,
    /// A write answers with the key's siblings after it, and their context,
    /// instead of the writer's own context (Riak's `returnbody`).
    #[serde(rename = "returnbody")]
    pub return_body: bool,
}

impl Default for RequestOptions {
    fn default() -> Self {
        RequestOptions {
            r: Quorum::Majority,
            w: Quorum::Majority,
            pr: Quorum::Count(0),
            pw: Quorum::Count(0),
            timeout_ms: DEFAULT_TIMEOUT_MS,
            sync: false,
            sloppy: true,
            return_body: false,
        }
    }
}

/// The options of one request resolved against N and validated.
///
/// Holds `1 <= r <= n`, `1 <= w <= n`, `pr <= r`, `pw <= w` and
/// `1 <= timeout_ms <= MAX_TIMEOUT_MS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedOptions {
    /// The replication factor the counts were resolved against.
    pub n: usize,
    pub r: usize,
    pub w: usize,
    pub pr: usize,
    pub pw: usize,
    pub timeout_ms: u64,
    pub sync: bool,
    pub sloppy: bool,
}

/// What a request does, as far as its options go: every option is taken
/// by every kind but `returnbody`, which only a [`Put`](RequestKind::Put)
/// takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// A read of a key (`GET`).
    Get,
    /// A write of a value (`PUT`).
    Put,
    /// A delete (`DELETE`).
    Delete,
    /// A key's preference list (`GET /v1/cluster/preflist/…`).
    Preflist,
}

/// A request option that was refused. Nothing was done for the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("unknown request option {name:?}")]
    UnknownOption { name: String },
    /// A known option that this kind of request does not take
    /// (`returnbody` on anything but a `PUT`). Its code is
    /// `unknown_option`, as for a name no request takes.
    #[error("{option} applies to PUT only")]
    PutOnly { option: &'static str },
    /// A query parameter on a route that takes none (the cluster and
    /// operations routes of the HTTP API). Its code is `unknown_option`.
    #[error("unknown query parameter {name:?}: this route takes none")]
    NoneTaken { name: String },
    #[error("request option {option} given more than once")]
    DuplicateOption { option: &'static str },
    #[error("{option}={value:?} is neither a whole number nor one of one, quorum, all")]
    InvalidQuorum { option: &'static str, value: String },
    #[error("{option}={value} is too large a number")]
    Overflow { option: &'static str, value: String },
    #[error("{option}={value:?} is neither true nor false")]
    InvalidBool { option: &'static str, value: String },
    #[error("timeout={value:?} is not a number of milliseconds")]
    InvalidTimeout { value: String },
    /// `timeout` is the value as given (cut short as other echoed input).
    #[error("timeout={timeout} ms is outside 1..={max_ms} ms")]
    TimeoutOutOfRange { timeout: String, max_ms: u64 },
    #[error("{option} must be at least 1")]
    ZeroQuorum { option: &'static str },
    #[error(
        "{option}={value} exceeds the {n} replica{} of the key",
        if *.n == 1 { "" } else { "s" }
    )]
    QuorumAboveN {
        option: &'static str,
        value: usize,
        n: usize,
    },
    #[error("pr={pr} exceeds r={r}")]
    PrAboveR { pr: usize, r: usize },
    #[error("pw={pw} exceeds w={w}")]
    PwAboveW { pw: usize, w: usize },
}

impl OptionsError {
    /// A stable, machine-readable code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            OptionsError::UnknownOption { .. }
            | OptionsError::PutOnly { .. }
            | OptionsError::NoneTaken { .. } => "unknown_option",
            OptionsError::DuplicateOption { .. } => "duplicate_option",
            OptionsError::InvalidQuorum { .. } => "invalid_quorum",
            OptionsError::Overflow { .. } => "quorum_overflow",
            OptionsError::InvalidBool { .. } => "invalid_bool",
            OptionsError::InvalidTimeout { .. } => "invalid_timeout",
            OptionsError::TimeoutOutOfRange { .. } => "timeout_out_of_range",
            OptionsError::ZeroQuorum { .. } => "quorum_zero",
            OptionsError::QuorumAboveN { .. } => "quorum_above_n",
            OptionsError::PrAboveR { .. } => "pr_above_r",
            OptionsError::PwAboveW { .. } => "pw_above_w",
        }
    }

    /// The option at fault, when there is one.
    pub fn option(&self) -> Option<&str> {
        match self {
            OptionsError::UnknownOption { name } | OptionsError::NoneTaken { name } => Some(name),
            OptionsError::DuplicateOption { option }
            | OptionsError::InvalidQuorum { option, .. }
            | OptionsError::Overflow { option, .. }
            | OptionsError::InvalidBool { option, .. }
            | OptionsError::ZeroQuorum { option }
            | OptionsError::QuorumAboveN { option, .. }
            | OptionsError::PutOnly { option } => Some(option),
            OptionsError::InvalidTimeout { .. } | OptionsError::TimeoutOutOfRange { .. } => {
                Some("timeout")
            }
            OptionsError::PrAboveR { .. } => Some("pr"),
            OptionsError::PwAboveW { .. } => Some("pw"),
        }
    }
}

/// The option names, in the order [`RequestOptions::parse`] tracks them.
const NAMES: [&str; 8] = [
    "r",
    "w",
    "pr",
    "pw",
    "timeout",
    "sync",
    "sloppy",
    "returnbody",
];

impl RequestOptions {
    /// Parses `(name, value)` pairs such as a query string's parameters.
    /// Options not given keep their defaults. An unknown name, an option
    /// given twice or a malformed value is refused, and so is `r` or `w`
    /// of 0 (`quorum_zero`), which no replication factor makes valid; the
    /// rest of what depends on N is checked by [`resolve`](Self::resolve).
    pub fn parse<'a, I>(pairs: I) -> Result<RequestOptions, OptionsError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut options = RequestOptions::default();
        let mut seen = [false; NAMES.len()];
        for (name, value) in pairs {
            let Some(index) = NAMES.iter().position(|&known| known == name) else {
                return Err(OptionsError::UnknownOption { name: echo(name) });
            };
            let option = NAMES[index];
            if std::mem::replace(&mut seen[index], true) {
                return Err(OptionsError::DuplicateOption { option });
            }
            match option {
                "r" => options.r = Quorum::parse_nonzero(option, value)?,
                "w" => options.w = Quorum::parse_nonzero(option, value)?,
                "pr" => options.pr = Quorum::parse(option, value)?,
                "pw" => options.pw = Quorum::parse(option, value)?,
                "timeout" => options.timeout_ms = parse_timeout(value)?,
                "sync" => options.sync = parse_bool(option, value)?,
                "sloppy" => options.sloppy = parse_bool(option, value)?,
                "returnbody" => options.return_body = parse_bool(option, value)?,
                _ => unreachable!("every name in NAMES is handled"),
            }
        }
        Ok(options)
    }

    /// [`parse`](Self::parse) for a `kind` of request: also refuses an
    /// option that kind does not take, whatever its value (`returnbody`
    /// on anything but a `PUT`: `unknown_option`).
    pub fn parse_for<'a, I>(kind: RequestKind, pairs: I) -> Result<RequestOptions, OptionsError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        // The refusal comes before any value is parsed, so that
        // `returnbody=yes` on a delete is refused as misplaced, not as a
        // malformed boolean.
        let pairs: Vec<(&str, &str)> = pairs.into_iter().collect();
        if kind != RequestKind::Put && pairs.iter().any(|&(name, _)| name == "returnbody") {
            return Err(OptionsError::PutOnly {
                option: "returnbody",
            });
        }
        RequestOptions::parse(pairs)
    }

    /// Checks options built directly (or decoded) for a `kind` of
    /// request: `return_body` only on a `PUT`. (A `false` cannot be told
    /// from an option not given, so only `true` is refused here.)
    pub fn check_for(&self, kind: RequestKind) -> Result<(), OptionsError> {
        if self.return_body && kind != RequestKind::Put {
            return Err(OptionsError::PutOnly {
                option: "returnbody",
            });
        }
        Ok(())
    }

    /// Resolves the counts against the replication factor `n` and checks
    /// that they can be met: `r` and `w` in 1..=n, `pr` and `pw` at most n
    /// (every count is held against n first, in the order `r`, `w`, `pr`,
    /// `pw`, so `pw=4` with n=3 is `quorum_above_n`, whatever `w` is), then
    /// `pr <= r`, `pw <= w`, and the timeout within its bounds.
    pub fn resolve(&self, n: usize) -> Result<ResolvedOptions, OptionsError> {
        assert!(n >= 1, "a key has at least one replica");
        let r = resolve_quorum("r", self.r, n)?;
        let w = resolve_quorum("w", self.w, n)?;
        let pr = resolve_primaries("pr", self.pr, n)?;
        let pw = resolve_primaries("pw", self.pw, n)?;
        if pr > r {
            return Err(OptionsError::PrAboveR { pr, r });
        }
        if pw > w {
            return Err(OptionsError::PwAboveW { pw, w });
        }
        check_timeout(self.timeout_ms)?;
        Ok(ResolvedOptions {
            n,
            r,
            w,
            pr,
            pw,
            timeout_ms: self.timeout_ms,
            sync: self.sync,
            sloppy: self.sloppy,
        })
    }

    /// The options that differ from the defaults, as `(name, value)` query
    /// parameters: what [`parse`](Self::parse) turns back into `self`.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let default = RequestOptions::default();
        let mut pairs = Vec::new();
        for (name, value, default) in [
            ("r", self.r, default.r),
            ("w", self.w, default.w),
            ("pr", self.pr, default.pr),
            ("pw", self.pw, default.pw),
        ] {
            if value != default {
                pairs.push((name, value.to_string()));
            }
        }
        if self.timeout_ms != default.timeout_ms {
            pairs.push(("timeout", self.timeout_ms.to_string()));
        }
        for (name, value, default) in [
            ("sync", self.sync, default.sync),
            ("sloppy", self.sloppy, default.sloppy),
            ("returnbody", self.return_body, default.return_body),
        ] {
            if value != default {
                pairs.push((name, value.to_string()));
            }
        }
        pairs
    }

    /// [`parse`](Self::parse) then [`resolve`](Self::resolve).
    pub fn parse_and_resolve<'a, I>(pairs: I, n: usize) -> Result<ResolvedOptions, OptionsError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        RequestOptions::parse(pairs)?.resolve(n)
    }
}

fn resolve_quorum(option: &'static str, quorum: Quorum, n: usize) -> Result<usize, OptionsError> {
    let value = quorum.resolve(n);
    if value == 0 {
        return Err(OptionsError::ZeroQuorum { option });
    }
    if value > n {
        return Err(OptionsError::QuorumAboveN { option, value, n });
    }
    Ok(value)
}

/// A count of primaries (`pr`, `pw`): 0 is allowed, more than `n` is not.
fn resolve_primaries(
    option: &'static str,
    quorum: Quorum,
    n: usize,
) -> Result<usize, OptionsError> {
    let value = quorum.resolve(n);
    if value > n {
        return Err(OptionsError::QuorumAboveN { option, value, n });
    }
    Ok(value)
}

fn parse_bool(option: &'static str, value: &str) -> Result<bool, OptionsError> {
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(OptionsError::InvalidBool {
            option,
            value: echo(value),
        })
    }
}

fn parse_timeout(value: &str) -> Result<u64, OptionsError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(OptionsError::InvalidTimeout { value: echo(value) });
    }
    // Digits only, so the parse fails only on overflow: far beyond the
    // maximum. The error echoes what was sent, not the number it stands for.
    let out_of_range = || OptionsError::TimeoutOutOfRange {
        timeout: echo(value),
        max_ms: MAX_TIMEOUT_MS,
    };
    let timeout_ms = value.parse::<u64>().map_err(|_| out_of_range())?;
    check_timeout(timeout_ms).map_err(|_| out_of_range())?;
    Ok(timeout_ms)
}

fn check_timeout(timeout_ms: u64) -> Result<(), OptionsError> {
    if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
        return Err(OptionsError::TimeoutOutOfRange {
            timeout: timeout_ms.to_string(),
            max_ms: MAX_TIMEOUT_MS,
        });
    }
    Ok(())
}

/// A client's input, cut short enough to put in an error message.
fn echo(input: &str) -> String {
    input.chars().take(MAX_ECHO_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Query parameters as the HTTP layer passes them.
    type Pairs<'a> = &'a [(&'a str, &'a str)];

    fn parse(pairs: &[(&str, &str)]) -> Result<RequestOptions, OptionsError> {
        RequestOptions::parse(pairs.iter().copied())
    }

    fn resolve(pairs: &[(&str, &str)], n: usize) -> Result<ResolvedOptions, OptionsError> {
        RequestOptions::parse_and_resolve(pairs.iter().copied(), n)
    }

    #[test]
    fn defaults_are_quorum_reads_and_writes_without_primaries() {
        assert_eq!(
            resolve(&[], 3),
            Ok(ResolvedOptions {
                n: 3,
                r: 2,
                w: 2,
                pr: 0,
                pw: 0,
                timeout_ms: DEFAULT_TIMEOUT_MS,
                sync: false,
                sloppy: true,
            })
        );
        assert_eq!(parse(&[]), Ok(RequestOptions::default()));
    }

    #[test]
    fn every_word_resolves_against_n() {
        for (n, one, quorum, all) in [(1, 1, 1, 1), (2, 1, 2, 2), (3, 1, 2, 3), (5, 1, 3, 5)] {
            for (word, expected) in [("one", one), ("quorum", quorum), ("all", all)] {
                let resolved =
                    resolve(&[("r", word), ("w", word), ("pr", word), ("pw", word)], n).unwrap();
                assert_eq!(
                    (resolved.r, resolved.w, resolved.pr, resolved.pw),
                    (expected, expected, expected, expected),
                    "{word} with n={n}"
                );
            }
        }
    }

    #[test]
    fn words_are_case_insensitive() {
        for word in ["ONE", "One", "oNe"] {
            assert_eq!(parse(&[("r", word)]).unwrap().r, Quorum::One);
        }
        for word in ["QUORUM", "Quorum"] {
            assert_eq!(parse(&[("w", word)]).unwrap().w, Quorum::Majority);
        }
        for word in ["ALL", "All"] {
            assert_eq!(parse(&[("pr", word)]).unwrap().pr, Quorum::All);
        }
        let options = parse(&[("sync", "TRUE"), ("sloppy", "False")]).unwrap();
        assert!(options.sync);
        assert!(!options.sloppy);
    }

    #[test]
    fn integers_and_every_option_are_taken() {
        let resolved = resolve(
            &[
                ("r", "3"),
                ("w", "1"),
                ("pr", "2"),
                ("pw", "1"),
                ("timeout", "250"),
                ("sync", "true"),
                ("sloppy", "false"),
            ],
            5,
        )
        .unwrap();
        assert_eq!(
            resolved,
            ResolvedOptions {
                n: 5,
                r: 3,
                w: 1,
                pr: 2,
                pw: 1,
                timeout_ms: 250,
                sync: true,
                sloppy: false,
            }
        );
        assert_eq!(parse(&[("r", "007")]).unwrap().r, Quorum::Count(7));
    }

    #[test]
    fn options_survive_the_query_string_and_serde() {
        let options = parse(&[
            ("r", "one"),
            ("w", "3"),
            ("pw", "all"),
            ("timeout", "250"),
            ("sync", "true"),
            ("sloppy", "false"),
            ("returnbody", "true"),
        ])
        .unwrap();
        let pairs = options.to_pairs();
        let back = RequestOptions::parse(pairs.iter().map(|(name, value)| (*name, value.as_str())));
        assert_eq!(back, Ok(options));
        assert_eq!(RequestOptions::default().to_pairs(), []);
        let json = serde_json::to_value(options).unwrap();
        assert_eq!(json["r"], "one");
        assert_eq!(json["w"], "3");
        assert_eq!(json["timeout"], 250);
        assert_eq!(
            serde_json::from_value::<RequestOptions>(json).unwrap(),
            options
        );
        let partial: RequestOptions = serde_json::from_str(r#"{"w": "ALL"}"#).unwrap();
        assert_eq!(partial.w, Quorum::All);
        assert_eq!(partial.r, Quorum::Majority);
        assert!(serde_json::from_str::<RequestOptions>(r#"{"w": "most"}"#).is_err());
    }

    #[test]
    fn counts_display_as_written() {
        assert_eq!(Quorum::One.to_string(), "one");
        assert_eq!(Quorum::Majority.to_string(), "quorum");
        assert_eq!(Quorum::All.to_string(), "all");
        assert_eq!(Quorum::Count(4).to_string(), "4");
    }

    #[test]
    fn malformed_values_are_refused_with_their_code() {
        let cases: &[(Pairs<'_>, OptionsError, &str)] = &[
            (
                &[("r", "two")],
                OptionsError::InvalidQuorum {
                    option: "r",
                    value: "two".into(),
                },
                "invalid_quorum",
            ),
            (
                &[("w", "")],
                OptionsError::InvalidQuorum {
                    option: "w",
                    value: String::new(),
                },
                "invalid_quorum",
            ),
            (
                &[("pr", "-1")],
                OptionsError::InvalidQuorum {
                    option: "pr",
                    value: "-1".into(),
                },
                "invalid_quorum",
            ),
            (
                &[("pw", "+1")],
                OptionsError::InvalidQuorum {
                    option: "pw",
                    value: "+1".into(),
                },
                "invalid_quorum",
            ),
            (
                &[("r", " 1")],
                OptionsError::InvalidQuorum {
                    option: "r",
                    value: " 1".into(),
                },
                "invalid_quorum",
            ),
            (
                &[("w", "default")],
                OptionsError::InvalidQuorum {
                    option: "w",
                    value: "default".into(),
                },
                "invalid_quorum",
            ),
            (
                &[("w", "4294967296")],
                OptionsError::Overflow {
                    option: "w",
                    value: "4294967296".into(),
                },
                "quorum_overflow",
            ),
            (
                &[("r", "99999999999999999999999")],
                OptionsError::Overflow {
                    option: "r",
                    value: "99999999999999999999999".into(),
                },
                "quorum_overflow",
            ),
            (
                &[("sync", "yes")],
                OptionsError::InvalidBool {
                    option: "sync",
                    value: "yes".into(),
                },
                "invalid_bool",
            ),
            (
                &[("sloppy", "1")],
                OptionsError::InvalidBool {
                    option: "sloppy",
                    value: "1".into(),
                },
                "invalid_bool",
            ),
            (
                &[("timeout", "5s")],
                OptionsError::InvalidTimeout { value: "5s".into() },
                "invalid_timeout",
            ),
            (
                &[("timeout", "")],
                OptionsError::InvalidTimeout {
                    value: String::new(),
                },
                "invalid_timeout",
            ),
            (
                &[("timeout", "0")],
                OptionsError::TimeoutOutOfRange {
                    timeout: "0".into(),
                    max_ms: MAX_TIMEOUT_MS,
                },
                "timeout_out_of_range",
            ),
            (
                &[("timeout", "120001")],
                OptionsError::TimeoutOutOfRange {
                    timeout: "120001".into(),
                    max_ms: MAX_TIMEOUT_MS,
                },
                "timeout_out_of_range",
            ),
            (
                &[("timeout", "99999999999999999999999")],
                OptionsError::TimeoutOutOfRange {
                    timeout: "99999999999999999999999".into(),
                    max_ms: MAX_TIMEOUT_MS,
                },
                "timeout_out_of_range",
            ),
            (
                &[("n", "3")],
                OptionsError::UnknownOption { name: "n".into() },
                "unknown_option",
            ),
            (
                &[("R", "1")],
                OptionsError::UnknownOption { name: "R".into() },
                "unknown_option",
            ),
            (
                &[("r", "1"), ("w", "1"), ("r", "2")],
                OptionsError::DuplicateOption { option: "r" },
                "duplicate_option",
            ),
        ];
        for (pairs, error, code) in cases {
            assert_eq!(parse(pairs).as_ref(), Err(error), "{pairs:?}");
            assert_eq!(error.code(), *code);
        }
        assert_eq!(
            parse(&[("timeout", "120000")]).unwrap().timeout_ms,
            MAX_TIMEOUT_MS
        );
    }

    #[test]
    fn counts_that_cannot_be_met_are_refused_with_their_code() {
        let cases: &[(Pairs<'_>, usize, OptionsError, &str)] = &[
            (
                &[("w", "4")],
                3,
                OptionsError::QuorumAboveN {
                    option: "w",
                    value: 4,
                    n: 3,
                },
                "quorum_above_n",
            ),
            (
                &[("r", "4")],
                3,
                OptionsError::QuorumAboveN {
                    option: "r",
                    value: 4,
                    n: 3,
                },
                "quorum_above_n",
            ),
            (
                &[("r", "0")],
                3,
                OptionsError::ZeroQuorum { option: "r" },
                "quorum_zero",
            ),
            (
                &[("w", "0")],
                3,
                OptionsError::ZeroQuorum { option: "w" },
                "quorum_zero",
            ),
            (
                &[("r", "one"), ("pr", "2")],
                3,
                OptionsError::PrAboveR { pr: 2, r: 1 },
                "pr_above_r",
            ),
            (
                &[("pr", "all")],
                3,
                OptionsError::PrAboveR { pr: 3, r: 2 },
                "pr_above_r",
            ),
            (
                &[("w", "1"), ("pw", "quorum")],
                3,
                OptionsError::PwAboveW { pw: 2, w: 1 },
                "pw_above_w",
            ),
            // Every count is held against N before pr <= r and pw <= w,
            // so a count no cluster of this N can meet is named as such.
            (
                &[("pw", "4")],
                3,
                OptionsError::QuorumAboveN {
                    option: "pw",
                    value: 4,
                    n: 3,
                },
                "quorum_above_n",
            ),
            (
                &[("pr", "4")],
                3,
                OptionsError::QuorumAboveN {
                    option: "pr",
                    value: 4,
                    n: 3,
                },
                "quorum_above_n",
            ),
            (
                &[("pw", "4"), ("w", "4")],
                3,
                OptionsError::QuorumAboveN {
                    option: "w",
                    value: 4,
                    n: 3,
                },
                "quorum_above_n",
            ),
            (
                &[("r", "1"), ("pw", "5"), ("pr", "4")],
                3,
                OptionsError::QuorumAboveN {
                    option: "pr",
                    value: 4,
                    n: 3,
                },
                "quorum_above_n",
            ),
            (
                &[("pw", "3")],
                3,
                OptionsError::PwAboveW { pw: 3, w: 2 },
                "pw_above_w",
            ),
        ];
        for (pairs, n, error, code) in cases {
            assert_eq!(resolve(pairs, *n).as_ref(), Err(error), "{pairs:?}");
            assert_eq!(error.code(), *code);
        }
        // The boundaries themselves are fine.
        let edge = resolve(&[("r", "3"), ("w", "3"), ("pr", "3"), ("pw", "3")], 3).unwrap();
        assert_eq!((edge.r, edge.w, edge.pr, edge.pw), (3, 3, 3, 3));
        let edge = resolve(&[("r", "1"), ("w", "1"), ("pr", "0"), ("pw", "0")], 3).unwrap();
        assert_eq!((edge.r, edge.w, edge.pr, edge.pw), (1, 1, 0, 0));
    }

    /// `returnbody` makes a write answer like a read; a delete that did
    /// so would answer `404` whether or not it deleted something.
    #[test]
    fn returnbody_is_taken_by_a_put_only() {
        for value in ["true", "false", "yes", "1", ""] {
            let pairs = [("w", "all"), ("returnbody", value)];
            for kind in [RequestKind::Get, RequestKind::Delete, RequestKind::Preflist] {
                let error = RequestOptions::parse_for(kind, pairs).unwrap_err();
                assert_eq!(
                    error,
                    OptionsError::PutOnly {
                        option: "returnbody"
                    },
                    "{kind:?} returnbody={value}"
                );
                assert_eq!(error.code(), "unknown_option");
                assert_eq!(error.option(), Some("returnbody"));
                assert_eq!(error.to_string(), "returnbody applies to PUT only");
            }
            // A put takes it, and checks its value.
            match RequestOptions::parse_for(RequestKind::Put, pairs) {
                Ok(put) => assert_eq!(put.return_body, value == "true"),
                Err(error) => assert_eq!(error.code(), "invalid_bool", "returnbody={value}"),
            }
            assert_eq!(
                RequestOptions::parse_for(RequestKind::Put, pairs).is_ok(),
                value == "true" || value == "false"
            );
        }
        // Without it every kind takes the other options.
        for kind in [RequestKind::Get, RequestKind::Delete, RequestKind::Preflist] {
            assert!(RequestOptions::parse_for(kind, [("sync", "true")]).is_ok());
        }
        // Options built directly (or decoded from QUIC) are checked too.
        let returning = RequestOptions {
            return_body: true,
            ..RequestOptions::default()
        };
        assert_eq!(returning.check_for(RequestKind::Put), Ok(()));
        for kind in [RequestKind::Get, RequestKind::Delete, RequestKind::Preflist] {
            assert_eq!(
                returning.check_for(kind),
                Err(OptionsError::PutOnly {
                    option: "returnbody"
                })
            );
            assert_eq!(RequestOptions::default().check_for(kind), Ok(()));
        }
    }

    #[test]
    fn options_built_directly_are_checked_too() {
        let options = RequestOptions {
            timeout_ms: 0,
            ..RequestOptions::default()
        };
        assert_eq!(
            options.resolve(3),
            Err(OptionsError::TimeoutOutOfRange {
                timeout: "0".into(),
                max_ms: MAX_TIMEOUT_MS
            })
        );
    }

    /// A timeout too large for a u64 is echoed as sent, not as the largest
    /// number it was read as.
    #[test]
    fn an_overflowing_timeout_is_echoed_as_sent() {
        let error = parse(&[("timeout", "99999999999999999999")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "timeout=99999999999999999999 ms is outside 1..=120000 ms"
        );
    }

    #[test]
    fn errors_name_their_option_and_echo_bounded_input() {
        let long = "x".repeat(1000);
        let error = parse(&[("r", &long)]).unwrap_err();
        assert_eq!(error.option(), Some("r"));
        match error {
            OptionsError::InvalidQuorum { value, .. } => assert_eq!(value.len(), MAX_ECHO_CHARS),
            other => panic!("unexpected {other:?}"),
        }
        let error = parse(&[(&long, "1")]).unwrap_err();
        assert_eq!(error.option().map(str::len), Some(MAX_ECHO_CHARS));
        assert_eq!(OptionsError::PrAboveR { pr: 2, r: 1 }.option(), Some("pr"));
        assert_eq!(
            OptionsError::PwAboveW { pw: 2, w: 1 }.to_string(),
            "pw=2 exceeds w=1"
        );
        assert_eq!(
            OptionsError::QuorumAboveN {
                option: "w",
                value: 4,
                n: 3
            }
            .to_string(),
            "w=4 exceeds the 3 replicas of the key"
        );
        assert_eq!(
            OptionsError::QuorumAboveN {
                option: "r",
                value: 2,
                n: 1
            }
            .to_string(),
            "r=2 exceeds the 1 replica of the key"
        );
    }
}
