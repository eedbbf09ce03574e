//! The shell's language: words, statements and commands. Pure; no I/O.
//!
//! * Words are separated by spaces. `"..."` quotes with `\"`, `\\`, `\n`
//!   and `\t` escapes; `'...'` quotes literally. A word may mix quoted and
//!   unquoted parts (`users/"a b"`).
//! * Statements end at `;` or a newline outside quotes. `#` at the start of
//!   a word comments out the rest of the line.
//! * Keywords are case-insensitive (`get`, `GET`, `Get`).
//! * A key is `KEY` (in the bucket chosen with `USE`) or `BUCKET/KEY`: an
//!   unquoted `/` splits the bucket from the key at its first occurrence,
//!   so `users/a/b` is key `a/b` in bucket `users`. A `/` inside quotes
//!   does not split: `"a/b"` is key `a/b` in the current bucket.
//! * Trailing `name=value` words are request options (`r=all w=2
//!   timeout=500`), parsed by [`RequestOptions::parse`](crate::RequestOptions::parse)
//!   so they fail with the codes a node gives; `PUT` and `RESOLVE` also take
//!   `type=CONTENT-TYPE`.

/// One word of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    /// Byte offsets in `text` of characters that came from quotes.
    quoted: Vec<(usize, usize)>,
}

impl Word {
    fn is_quoted(&self) -> bool {
        !self.quoted.is_empty()
    }

    /// The byte offset of the first `/` outside quotes.
    fn unquoted_slash(&self) -> Option<usize> {
        self.text
            .match_indices('/')
            .map(|(at, _)| at)
            .find(|&at| !self.quoted.iter().any(|&(from, to)| from <= at && at < to))
    }

    /// `name=value` with an unquoted name: a request option.
    fn option(&self) -> Option<(&str, &str)> {
        let (name, value) = self.text.split_once('=')?;
        let name_quoted = self.quoted.iter().any(|&(from, _)| from <= name.len());
        (!name.is_empty() && !name_quoted).then_some((name, value))
    }
}

/// A statement that could not be read; `code` is `syntax`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    pub message: String,
}

/// An optional sign and at least one ASCII digit, nothing else.
fn reads_as_integer(text: &str) -> bool {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn syntax(message: impl Into<String>) -> SyntaxError {
    SyntaxError {
        message: message.into(),
    }
}

/// Splits text into statements of words. Empty statements are dropped.
pub fn split(input: &str) -> Result<Vec<Vec<Word>>, SyntaxError> {
    split_lines(input)
        .map(|statements| statements.into_iter().map(|s| s.words).collect())
        .map_err(|(_, error)| error)
}

/// One statement of a script and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The line of the input its first word starts on, from 1.
    pub line: usize,
    pub words: Vec<Word>,
}

/// [`split`], keeping the line each statement starts on; an error comes
/// with the line it was found on (for an unterminated quote, the line the
/// quote opens on).
pub fn split_lines(input: &str) -> Result<Vec<Statement>, (usize, SyntaxError)> {
    let mut statements = Vec::new();
    let mut words: Vec<Word> = Vec::new();
    let mut word: Option<Word> = None;
    let mut line = 1;
    // The line the statement being read starts on.
    let mut first_line = 1;
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        if words.is_empty() && word.is_none() {
            first_line = line;
        }
        match c {
            ';' | '\n' => {
                words.extend(word.take());
                if !words.is_empty() {
                    statements.push(Statement {
                        line: first_line,
                        words: std::mem::take(&mut words),
                    });
                }
                if c == '\n' {
                    line += 1;
                }
            }
            c if c.is_whitespace() => words.extend(word.take()),
            '#' if word.is_none() => {
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            '"' | '\'' => {
                let word = word.get_or_insert_with(|| Word {
                    text: String::new(),
                    quoted: Vec::new(),
                });
                let from = word.text.len();
                let opened = line;
                let unterminated =
                    |quote: char| (opened, syntax(format!("unterminated {quote}quote{quote}")));
                loop {
                    match chars.next() {
                        None => return Err(unterminated(c)),
                        Some(end) if end == c => break,
                        Some('\\') if c == '"' => match chars.next() {
                            Some('n') => word.text.push('\n'),
                            Some('t') => word.text.push('\t'),
                            Some(other @ ('"' | '\\')) => word.text.push(other),
                            Some(other) => {
                                if other == '\n' {
                                    line += 1;
                                }
                                word.text.push('\\');
                                word.text.push(other);
                            }
                            None => return Err(unterminated('"')),
                        },
                        Some(other) => {
                            if other == '\n' {
                                line += 1;
                            }
                            word.text.push(other);
                        }
                    }
                }
                let to = word.text.len();
                // An empty quoted part still marks the word as quoted.
                word.quoted.push((from, to.max(from + 1)));
            }
            c => word
                .get_or_insert_with(|| Word {
                    text: String::new(),
                    quoted: Vec::new(),
                })
                .text
                .push(c),
        }
    }
    words.extend(word);
    if !words.is_empty() {
        statements.push(Statement {
            line: first_line,
            words,
        });
    }
    Ok(statements)
}

/// Where a key lives: a bucket (or the current one) and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub bucket: Option<String>,
    pub key: String,
}

/// What `RESOLVE` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Sibling number `n` (from 1) of the last read; a number too large
    /// for a `usize` is `usize::MAX`, past the last sibling of any key.
    Sibling(usize),
    /// A new value replacing every sibling.
    Value(Vec<u8>),
}

/// Request options as written: `(name, value)` pairs.
pub type Pairs = Vec<(String, String)>;

/// One shell command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Use {
        bucket: String,
    },
    Get {
        target: Target,
        options: Pairs,
    },
    Put {
        target: Target,
        value: Vec<u8>,
        content_type: Option<String>,
        context: Option<String>,
        options: Pairs,
    },
    Del {
        target: Target,
        context: Option<String>,
        options: Pairs,
    },
    Resolve {
        target: Target,
        resolution: Resolution,
        content_type: Option<String>,
        options: Pairs,
    },
    /// No options: print the session's defaults.
    Consistency {
        options: Pairs,
    },
    Status,
    Ring,
    Preflist {
        target: Target,
        options: Pairs,
    },
    Help {
        topic: Option<String>,
    },
    Exit,
}

/// The command keywords, for help and completion.
pub const KEYWORDS: [&str; 13] = [
    "USE",
    "GET",
    "PUT",
    "DEL",
    "RESOLVE",
    "CONSISTENCY",
    "STATUS",
    "RING",
    "PREFLIST",
    "HELP",
    "EXIT",
    "QUIT",
    "DELETE",
];

/// The request option names the shell accepts.
pub const OPTION_NAMES: [&str; 7] = ["r", "w", "pr", "pw", "timeout", "sync", "sloppy"];

/// Reads one statement as a command.
pub fn parse(words: &[Word]) -> Result<Command, SyntaxError> {
    let (keyword, args) = words.split_first().ok_or_else(|| syntax("empty command"))?;
    let name = keyword.text.to_ascii_uppercase();
    // Leading positional words, then `name=value` options.
    let positional = args.iter().take_while(|w| w.option().is_none()).count();
    let (fixed, rest) = args.split_at(positional);
    let options = || -> Result<Pairs, SyntaxError> {
        rest.iter()
            .map(|w| {
                w.option()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .ok_or_else(|| {
                        syntax(format!(
                            "{:?}: expected a name=value option after the arguments of {name}",
                            w.text
                        ))
                    })
            })
            .collect()
    };
    let arity = |want: &str| syntax(format!("usage: {name} {want}"));
    match name.as_str() {
        "USE" => match fixed {
            [bucket] if rest.is_empty() => Ok(Command::Use {
                bucket: bucket.text.clone(),
            }),
            _ => Err(arity("BUCKET")),
        },
        "GET" => match fixed {
            [key] => Ok(Command::Get {
                target: target(key),
                options: options()?,
            }),
            _ => Err(arity("[BUCKET/]KEY [option=value …]")),
        },
        "PUT" => {
            // The value is positional even when it contains `=`.
            let (key, value, rest) = match args {
                [key, value, rest @ ..] if key.option().is_none() => (key, value, rest),
                _ => {
                    return Err(arity(
                        "[BUCKET/]KEY VALUE [type=CONTENT-TYPE] [option=value …]",
                    ))
                }
            };
            let (content_type, options) = split_type(option_words(&name, rest)?);
            Ok(Command::Put {
                target: target(key),
                value: value.text.clone().into_bytes(),
                content_type,
                context: None,
                options,
            })
        }
        "DEL" | "DELETE" => match fixed {
            [key] => Ok(Command::Del {
                target: target(key),
                context: None,
                options: options()?,
            }),
            _ => Err(arity("[BUCKET/]KEY [option=value …]")),
        },
        "RESOLVE" => {
            let usage = "[BUCKET/]KEY (N | VALUE) [type=CONTENT-TYPE] [option=value …]";
            let (key, choice, rest) = match args {
                [key, choice, rest @ ..] if key.option().is_none() => (key, choice, rest),
                _ => return Err(arity(usage)),
            };
            // An unquoted number picks a sibling; quote it to write it.
            // Anything unquoted that reads as an integer (a sign, digits) is
            // a choice, so a mistyped one is refused instead of replacing
            // every sibling with its text.
            let resolution = if choice.is_quoted() || !reads_as_integer(&choice.text) {
                Resolution::Value(choice.text.clone().into_bytes())
            } else {
                let quote = "quote a value that looks like a number";
                let from_one = || {
                    syntax(format!(
                        "siblings are numbered from 1 ({quote}: \"{}\")",
                        choice.text
                    ))
                };
                let digits = choice.text.strip_prefix('+').unwrap_or(&choice.text);
                match digits.parse::<usize>() {
                    Ok(n) if n > 0 => Resolution::Sibling(n),
                    Ok(_) => return Err(from_one()),
                    Err(_) if choice.text.starts_with('-') => return Err(from_one()),
                    // Digits too many for a usize: past the last sibling
                    // of any key, refused as such when run.
                    Err(_) => Resolution::Sibling(usize::MAX),
                }
            };
            let (content_type, options) = split_type(option_words(&name, rest)?);
            Ok(Command::Resolve {
                target: target(key),
                resolution,
                content_type,
                options,
            })
        }
        "CONSISTENCY" => match fixed {
            [] => Ok(Command::Consistency {
                options: options()?,
            }),
            // cqlsh's form: one level for reads and writes.
            [level] if level.text.parse::<crate::Quorum>().is_err() => Err(syntax(format!(
                "CONSISTENCY {:?}: a level is one, quorum, all or a replica count \
                 (for r and w alike); or give options, as in CONSISTENCY r=one w=all",
                level.text
            ))),
            [level] if rest.is_empty() => Ok(Command::Consistency {
                options: vec![
                    ("r".into(), level.text.clone()),
                    ("w".into(), level.text.clone()),
                ],
            }),
            _ => Err(arity("[LEVEL | option=value …]")),
        },
        "STATUS" | "RING" if args.is_empty() => Ok(if name == "STATUS" {
            Command::Status
        } else {
            Command::Ring
        }),
        "STATUS" | "RING" => Err(arity("")),
        "PREFLIST" => match fixed {
            [key] => Ok(Command::Preflist {
                target: target(key),
                options: options()?,
            }),
            [bucket, key] => Ok(Command::Preflist {
                target: Target {
                    bucket: Some(bucket.text.clone()),
                    key: key.text.clone(),
                },
                options: options()?,
            }),
            _ => Err(arity("BUCKET KEY [sloppy=BOOL]")),
        },
        "HELP" | "?" => match args {
            [] => Ok(Command::Help { topic: None }),
            [topic] => Ok(Command::Help {
                topic: Some(topic.text.clone()),
            }),
            _ => Err(arity("[COMMAND]")),
        },
        "EXIT" | "QUIT" if args.is_empty() => Ok(Command::Exit),
        "EXIT" | "QUIT" => Err(arity("")),
        _ => Err(unknown_command(&keyword.text)),
    }
}

/// The error for a command that does not exist, as typed (also `HELP`'s
/// for one).
pub(crate) fn unknown_command(word: &str) -> SyntaxError {
    syntax(format!(
        "unknown command {word:?} (HELP lists the commands)"
    ))
}

fn option_words(name: &str, words: &[Word]) -> Result<Pairs, SyntaxError> {
    words
        .iter()
        .map(|w| match w.option() {
            Some((n, v)) => Ok((n.to_string(), v.to_string())),
            None => Err(syntax(format!(
                "{:?}: expected a name=value option after the arguments of {name}",
                w.text
            ))),
        })
        .collect()
}

/// Takes `type=…` out of the options.
fn split_type(pairs: Pairs) -> (Option<String>, Pairs) {
    let mut content_type = None;
    let mut rest = Vec::new();
    for (name, value) in pairs {
        if name == "type" {
            content_type = Some(value);
        } else {
            rest.push((name, value));
        }
    }
    (content_type, rest)
}

fn target(word: &Word) -> Target {
    match word.unquoted_slash() {
        Some(at) => Target {
            bucket: Some(word.text[..at].to_string()),
            key: word.text[at + 1..].to_string(),
        },
        None => Target {
            bucket: None,
            key: word.text.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(input: &str) -> Command {
        let statements = split(input).unwrap();
        assert_eq!(statements.len(), 1, "{input:?}");
        parse(&statements[0]).unwrap()
    }

    fn key(bucket: Option<&str>, key: &str) -> Target {
        Target {
            bucket: bucket.map(str::to_string),
            key: key.to_string(),
        }
    }

    #[test]
    fn statements_split_at_semicolons_and_newlines_outside_quotes() {
        let statements =
            split("use a; put k \"x;y\"\n get k # a comment; not a statement\n").unwrap();
        let texts: Vec<Vec<&str>> = statements
            .iter()
            .map(|s| s.iter().map(|w| w.text.as_str()).collect())
            .collect();
        assert_eq!(
            texts,
            [vec!["use", "a"], vec!["put", "k", "x;y"], vec!["get", "k"]]
        );
        assert!(split("put k \"open").is_err());
        assert!(split(";;\n  ;").unwrap().is_empty());
    }

    #[test]
    fn statements_know_the_line_they_start_on() {
        let script = "use a\n\n# a comment\nput k 'two\nlines'; get k\n  get x; get y\nget z";
        let lines: Vec<(usize, String)> = split_lines(script)
            .unwrap()
            .into_iter()
            .map(|s| (s.line, s.words[0].text.clone() + " " + &s.words[1].text))
            .collect();
        assert_eq!(
            lines,
            [
                (1, "use a".to_string()),
                (4, "put k".to_string()),
                (5, "get k".to_string()),
                (6, "get x".to_string()),
                (6, "get y".to_string()),
                (7, "get z".to_string()),
            ]
        );
        // An unterminated quote is reported on the line it opens on.
        let (line, error) = split_lines("use a\nput k \"open\nmore").unwrap_err();
        assert_eq!(
            (line, error.message.as_str()),
            (2, "unterminated \"quote\"")
        );
        let (line, _) = split_lines("get a\r\nget 'b").unwrap_err();
        assert_eq!(line, 2);
    }

    #[test]
    fn keywords_are_case_insensitive_and_keys_split_at_the_first_unquoted_slash() {
        assert_eq!(
            one("get users/ada"),
            Command::Get {
                target: key(Some("users"), "ada"),
                options: vec![]
            }
        );
        assert_eq!(
            one("GeT users/a/b r=all"),
            Command::Get {
                target: key(Some("users"), "a/b"),
                options: vec![("r".into(), "all".into())]
            }
        );
        assert_eq!(
            one("GET \"a/b\""),
            Command::Get {
                target: key(None, "a/b"),
                options: vec![]
            }
        );
        assert_eq!(
            one("GET users/\"a/b\""),
            Command::Get {
                target: key(Some("users"), "a/b"),
                options: vec![]
            }
        );
    }

    #[test]
    fn put_takes_its_value_positionally_and_type_apart_from_the_options() {
        assert_eq!(
            one("PUT k 'a=b c' type=text/plain w=all"),
            Command::Put {
                target: key(None, "k"),
                value: b"a=b c".to_vec(),
                content_type: Some("text/plain".into()),
                context: None,
                options: vec![("w".into(), "all".into())],
            }
        );
        assert!(parse(&split("PUT k").unwrap()[0]).is_err());
        assert!(parse(&split("PUT k v extra").unwrap()[0]).is_err());
    }

    #[test]
    fn resolve_picks_a_sibling_by_unquoted_number_or_writes_a_value() {
        assert!(matches!(
            one("resolve k 2"),
            Command::Resolve {
                resolution: Resolution::Sibling(2),
                ..
            }
        ));
        assert!(matches!(
            one("resolve k \"2\""),
            Command::Resolve { resolution: Resolution::Value(v), .. } if v == b"2"
        ));
        assert!(parse(&split("resolve k 0").unwrap()[0]).is_err());
    }

    /// A mistyped choice must not become a value that replaces every
    /// sibling: whatever reads as an integer is a choice or an error.
    #[test]
    fn resolve_refuses_a_number_that_is_no_sibling_instead_of_writing_it() {
        for typo in ["-1", "-0", "+0", "00", "-99999999999999999999999"] {
            let error = parse(&split(&format!("resolve k {typo}")).unwrap()[0])
                .expect_err(typo)
                .to_string();
            assert!(error.contains(&format!("\"{typo}\"")), "{typo}: {error}");
        }
        // A number too large for any key's siblings is a choice of none:
        // refused as `no_such_sibling` when run, as any number past the last
        // sibling is (session tests).
        for (choice, n) in [
            ("01", 1),
            ("+2", 2),
            ("3", 3),
            ("99999999999999999999999", usize::MAX),
            ("+99999999999999999999999", usize::MAX),
        ] {
            assert!(
                matches!(
                    one(&format!("resolve k {choice}")),
                    Command::Resolve { resolution: Resolution::Sibling(m), .. } if m == n
                ),
                "{choice}"
            );
        }
        for value in [
            "\"-1\"",
            "'99999999999999999999999'",
            "1.5",
            "-",
            "+",
            "1e3",
            "x1",
        ] {
            assert!(
                matches!(
                    one(&format!("resolve k {value}")),
                    Command::Resolve {
                        resolution: Resolution::Value(_),
                        ..
                    }
                ),
                "{value}"
            );
        }
    }

    #[test]
    fn consistency_takes_options_or_one_level() {
        assert_eq!(one("CONSISTENCY"), Command::Consistency { options: vec![] });
        assert_eq!(
            one("consistency all"),
            Command::Consistency {
                options: vec![("r".into(), "all".into()), ("w".into(), "all".into())]
            }
        );
        assert!(parse(&split("nonsense").unwrap()[0]).is_err());
    }

    #[test]
    fn a_consistency_level_that_is_no_level_is_named_as_such() {
        let error = parse(&split("CONSISTENCY banana").unwrap()[0]).unwrap_err();
        assert!(
            error
                .message
                .contains("\"banana\": a level is one, quorum, all"),
            "{}",
            error.message
        );
        assert!(!error.message.contains("r:"), "{}", error.message);
        assert_eq!(
            one("consistency 2"),
            Command::Consistency {
                options: vec![("r".into(), "2".into()), ("w".into(), "2".into())]
            }
        );
    }
}
