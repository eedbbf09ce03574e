//! `HELP` texts.

/// One line per command: (keyword, usage, what it does).
const COMMANDS: [(&str, &str, &str); 11] = [
    ("USE", "USE BUCKET", "Sets the bucket that GET, PUT, DEL and RESOLVE use for a bare KEY."),
    (
        "GET",
        "GET [BUCKET/]KEY [option=value …]",
        "Reads a key. Several versions are printed numbered, with their timestamps and content types.",
    ),
    (
        "PUT",
        "PUT [BUCKET/]KEY VALUE [type=CONTENT-TYPE] [option=value …]",
        "Writes a value without a context (a blind write): a key that already has a value gets a sibling. Quote values with spaces.",
    ),
    (
        "DEL",
        "DEL [BUCKET/]KEY [option=value …]",
        "Deletes what a read of the key finds (DELETE also works).",
    ),
    (
        "RESOLVE",
        "RESOLVE [BUCKET/]KEY (N | VALUE) [type=CONTENT-TYPE] [option=value …]",
        "Replaces the siblings of the last GET of the key (or of a fresh read) with sibling N, or with VALUE. A word that reads as an integer (digits, with a sign or not) is always a sibling number; quote it to write it as a value.",
    ),
    (
        "CONSISTENCY",
        "CONSISTENCY [LEVEL | r=… w=… pr=… pw=… timeout=MS sync=BOOL sloppy=BOOL]",
        "Prints the session's request options, or changes them. A LEVEL (one, quorum, all or a number) sets r and w. Any command takes the same options for itself.",
    ),
    (
        "STATUS",
        "STATUS",
        "The cluster's members as the node answering sees them: name, id, addresses, status, generation, up or down, ring ownership.",
    ),
    (
        "RING",
        "RING",
        "The ring: its version, and each member's partitions and share (--output json lists every partition).",
    ),
    (
        "PREFLIST",
        "PREFLIST BUCKET KEY [sloppy=BOOL]",
        "Where a key's copies go now: its primaries, up or down, and the fallbacks standing in for down ones.",
    ),
    ("HELP", "HELP [COMMAND]", "Lists the commands, or explains one."),
    ("EXIT", "EXIT | QUIT", "Leaves the shell (Ctrl-D too)."),
];

/// The help for `topic` (a command's keyword, in any case), or the list
/// of commands; `None` when `topic` names no command.
pub fn text(topic: Option<&str>) -> Option<String> {
    if let Some(topic) = topic {
        let topic = match topic.to_ascii_uppercase().as_str() {
            "QUIT" => "EXIT".to_owned(),
            "DELETE" => "DEL".to_owned(),
            other => other.to_owned(),
        };
        let (_, usage, what) = COMMANDS.iter().find(|(name, _, _)| *name == topic)?;
        return Some(format!("{usage}\n  {what}\n"));
    }
    let mut text = String::from("Commands (case-insensitive; separate them with ; or newlines):\n");
    for (_, usage, _) in COMMANDS {
        text.push_str(&format!("  {usage}\n"));
    }
    text.push_str(concat!(
        "A KEY is in the bucket chosen with USE; BUCKET/KEY names the bucket (a key may contain\n",
        "further /). Quote a key with a / to keep it whole in the current bucket: GET \"a/b\".\n",
        "Options: r, w, pr, pw (a number, one, quorum or all), timeout (ms), sync, sloppy (true/false).\n",
    ));
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_keyword_has_help_in_any_case_and_nothing_else_does() {
        for keyword in crate::shell::command::KEYWORDS {
            assert!(text(Some(keyword)).is_some(), "{keyword}");
            assert!(
                text(Some(&keyword.to_ascii_lowercase())).is_some(),
                "{keyword}"
            );
        }
        assert_eq!(text(Some("delete")), text(Some("DEL")));
        for nothing in ["NOPE", "", "?", "GETS"] {
            assert_eq!(text(Some(nothing)), None, "{nothing:?}");
        }
        assert!(text(None).unwrap().starts_with("Commands"));
    }
}
