//! The interactive shell: rustyline with history in the user's data
//! directory and tab completion.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{Config, Editor, Helper};

use super::command::{self, KEYWORDS, OPTION_NAMES};
use super::session::{Outcome, Session, ShellError};

/// Where the history is kept: `<data dir>/chorus/history`
/// (`$XDG_DATA_HOME/chorus/history` or `~/.local/share/chorus/history` on
/// Linux).
pub fn history_path() -> Option<PathBuf> {
    dirs::data_dir().map(|dir| dir.join("chorus").join("history"))
}

/// Runs the interactive shell until `EXIT`, `QUIT` or Ctrl-D. Line editing
/// blocks, so it runs on a blocking thread and each command on the runtime.
pub async fn run(session: Session) -> ExitCode {
    let handle = tokio::runtime::Handle::current();
    match tokio::task::spawn_blocking(move || repl(session, handle)).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(error)) => {
            super::say(format_args!("error: {error}"));
            ExitCode::from(error.exit)
        }
        Err(error) => {
            super::say(format_args!("error: the shell stopped: {error}"));
            ExitCode::from(super::session::exit::OTHER)
        }
    }
}

fn repl(mut session: Session, runtime: tokio::runtime::Handle) -> Result<(), ShellError> {
    let config = Config::builder()
        .auto_add_history(true)
        .max_history_size(1000);
    let config = config
        .map_err(|e| ShellError::usage("terminal", e.to_string()))?
        .build();
    let mut editor: Editor<Completion, FileHistory> =
        Editor::with_config(config).map_err(|e| ShellError::usage("terminal", e.to_string()))?;
    editor.set_helper(Some(Completion {
        buckets: session.buckets(),
    }));
    let history = history_path();
    if let Some(path) = &history {
        // No history yet is not an error.
        let _ = editor.load_history(path);
    }
    println!("Chorus shell. HELP lists the commands; EXIT or Ctrl-D leaves.");
    let mut stdout = std::io::stdout();
    loop {
        let prompt = match session.bucket() {
            Some(bucket) => format!("chorus:{bucket}> "),
            None => "chorus> ".to_string(),
        };
        let line = match editor.readline(&prompt) {
            Ok(line) => line,
            // Ctrl-C abandons the line, as in other shells.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(error) => {
                save(&mut editor, history.as_ref());
                return Err(ShellError::usage("terminal", error.to_string()));
            }
        };
        let statements = match command::split(&line) {
            Ok(statements) => statements,
            Err(error) => {
                super::say(format_args!("error: syntax: {error}"));
                continue;
            }
        };
        let mut exit = false;
        for words in statements {
            let result = match command::parse(&words) {
                Ok(command) => runtime.block_on(session.execute(command, &mut stdout)),
                Err(error) => Err(ShellError::usage("syntax", error.message)),
            };
            match result {
                Ok(Outcome::Exit) => {
                    exit = true;
                    break;
                }
                Ok(_) => {}
                Err(error) => {
                    super::say(format_args!("error: {error}"));
                    // The rest of the line is not run.
                    break;
                }
            }
        }
        // Saved after every line, so a killed shell keeps its history.
        save(&mut editor, history.as_ref());
        if exit {
            break;
        }
    }
    save(&mut editor, history.as_ref());
    Ok(())
}

fn save(editor: &mut Editor<Completion, FileHistory>, path: Option<&PathBuf>) {
    let Some(path) = path else { return };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // Appends this session's new lines, so shells running side by side
    // keep each other's history.
    if let Err(error) = editor.append_history(path) {
        super::say(format_args!(
            "warning: could not save the history to {}: {error}",
            path.display()
        ));
    }
}

/// Tab completion: command keywords at the start of a statement, bucket
/// names seen in this session where a bucket goes, option names and levels
/// where options go.
struct Completion {
    buckets: Arc<Mutex<BTreeSet<String>>>,
}

impl Completion {
    fn candidates(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let before = &line[..pos];
        // The statement the cursor is in, and the word being typed.
        let statement = before.rsplit([';', '\n']).next().unwrap_or("");
        let word_start = statement
            .rfind(char::is_whitespace)
            .map_or(pos - statement.len(), |i| pos - statement.len() + i + 1);
        let word = &before[word_start..];
        let previous: Vec<&str> = before[..word_start]
            .rsplit([';', '\n'])
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let upper = word.chars().any(|c| c.is_ascii_uppercase()) || word.is_empty();
        let keyword_case = |k: &str| {
            if upper {
                k.to_string()
            } else {
                k.to_ascii_lowercase()
            }
        };
        let starts = |candidate: &str| {
            candidate
                .to_ascii_lowercase()
                .starts_with(&word.to_ascii_lowercase())
        };
        let Some(first) = previous.first() else {
            let found = KEYWORDS
                .iter()
                .filter(|k| **k != "DELETE" && starts(k))
                .map(|k| keyword_case(k))
                .collect();
            return (word_start, found);
        };
        let first = first.to_ascii_uppercase();
        let buckets = || -> Vec<String> {
            self.buckets
                .lock()
                .expect("the bucket set is never poisoned")
                .iter()
                .cloned()
                .collect()
        };
        let mut found = Vec::new();
        if let Some((name, value)) = word.split_once('=') {
            if matches!(name, "r" | "w" | "pr" | "pw") {
                for level in ["one", "quorum", "all"] {
                    if level.starts_with(value) {
                        found.push(format!("{name}={level}"));
                    }
                }
            } else if matches!(name, "sync" | "sloppy") {
                for value_word in ["true", "false"] {
                    if value_word.starts_with(value) {
                        found.push(format!("{name}={value_word}"));
                    }
                }
            }
            return (word_start, found);
        }
        match (first.as_str(), previous.len()) {
            ("USE", 1) | ("PREFLIST", 1) => {
                found.extend(buckets().into_iter().filter(|b| b.starts_with(word)));
            }
            ("GET" | "PUT" | "DEL" | "DELETE" | "RESOLVE", 1) => {
                found.extend(
                    buckets()
                        .into_iter()
                        .map(|b| format!("{b}/"))
                        .filter(|b| b.starts_with(word)),
                );
            }
            ("HELP", 1) => {
                found.extend(
                    KEYWORDS
                        .iter()
                        .filter(|k| starts(k))
                        .map(|k| keyword_case(k)),
                );
            }
            ("CONSISTENCY", 1) => {
                found.extend(
                    ["one", "quorum", "all"]
                        .iter()
                        .filter(|l| l.starts_with(word))
                        .map(|l| l.to_string()),
                );
                found.extend(option_words(word));
            }
            ("CONSISTENCY", _) | ("GET" | "DEL" | "DELETE", 2..) | ("PUT" | "RESOLVE", 3..) => {
                found.extend(option_words(word));
            }
            _ => {}
        }
        (word_start, found)
    }
}

fn option_words(word: &str) -> Vec<String> {
    OPTION_NAMES
        .iter()
        .map(|name| format!("{name}="))
        .filter(|option| option.starts_with(word))
        .collect()
}

impl Completer for Completion {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(self.candidates(line, pos))
    }
}

impl Hinter for Completion {
    type Hint = String;
}

impl Highlighter for Completion {}

impl Validator for Completion {}

impl Helper for Completion {}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buckets: &[&str], line: &str) -> Vec<String> {
        let completion = Completion {
            buckets: Arc::new(Mutex::new(buckets.iter().map(|b| b.to_string()).collect())),
        };
        let (start, found) = completion.candidates(line, line.len());
        found
            .into_iter()
            .map(|c| format!("{}{c}", &line[..start]))
            .collect()
    }

    #[test]
    fn completes_keywords_in_the_case_typed_buckets_and_options() {
        assert_eq!(complete(&[], "CONS"), ["CONSISTENCY"]);
        assert_eq!(complete(&[], "cons"), ["consistency"]);
        assert_eq!(complete(&[], "GET x; P"), ["GET x; PUT", "GET x; PREFLIST"]);
        assert_eq!(complete(&["users", "logs"], "use u"), ["use users"]);
        assert_eq!(complete(&["users"], "GET u"), ["GET users/"]);
        assert_eq!(complete(&[], "GET k r=q"), ["GET k r=quorum"]);
        assert_eq!(complete(&[], "CONSISTENCY sl"), ["CONSISTENCY sloppy="]);
        assert_eq!(complete(&[], "CONSISTENCY a"), ["CONSISTENCY all"]);
        assert!(complete(&[], "PUT k v").is_empty());
    }
}
