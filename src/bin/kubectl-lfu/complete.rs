//! Shell completion: `kubectl lfu completion bash|zsh|fish` prints a script for `kubectl-lfu`;
//! `kubectl lfu __complete ARGS...` answers kubectl's own plugin completion (kubectl 1.26+ runs
//! `kubectl_complete-lfu`, a two-line shim that calls it) in cobra's format: one candidate per
//! line, then `:4` (no file names). Upgrade names come from the cluster when a NAME is next.

use std::process::ExitCode;

use clap::{Command, CommandFactory};
use kube::api::ListParams;
use kube::{Api, Client};
use langfuse_upgrade_operator::api::LangfuseUpgrade;

/// What completes the last word of `args` (the words after `kubectl lfu`, the last one partial):
/// candidates from the command tree, or `Names` when an upgrade's name goes there.
#[derive(Debug, PartialEq, Eq)]
pub enum Wanted {
    Words(Vec<String>),
    Names(String),
}

/// Flags that take a value: the next word is that value, not a positional.
fn takes_value(cmd: &Command, word: &str) -> bool {
    cmd.get_arguments().filter(|a| a.get_action().takes_values()).any(|a| {
        a.get_long().is_some_and(|l| word == format!("--{l}")) || a.get_short().is_some_and(|s| word == format!("-{s}"))
    })
}

fn flags(cmd: &Command, root: &Command) -> Vec<String> {
    cmd.get_arguments()
        .chain(root.get_arguments().filter(|a| a.is_global_set()))
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect()
}

/// Values a flag's next word can take, where they are known.
fn values_of(flag: &str) -> Option<Vec<String>> {
    let known: &[&str] = match flag {
        "--chart" => &["1.5.41", "2.0.0"],
        "-o" | "--output" => &["text", "json", "yaml"],
        _ => return None,
    };
    Some(known.iter().map(|s| s.to_string()).collect())
}

pub fn wanted(root: &Command, args: &[String]) -> Wanted {
    let (partial, before) = args.split_last().map_or(("", &[][..]), |(l, b)| (l.as_str(), b));
    let mut sub: Option<&Command> = None;
    let mut positionals = 0;
    let mut skip = false;
    for word in before {
        let cmd = sub.unwrap_or(root);
        if std::mem::take(&mut skip) {
            continue;
        }
        if word.starts_with('-') {
            skip = takes_value(cmd, word) || takes_value(root, word);
            continue;
        }
        match sub {
            None => sub = root.find_subcommand(word),
            Some(_) => positionals += 1,
        }
    }
    if let Some(flag) = before.last().filter(|_| skip) {
        return Wanted::Words(filtered(values_of(flag).unwrap_or_default(), partial));
    }
    let Some(cmd) = sub else {
        let mut words: Vec<String> = root
            .get_subcommands()
            .filter(|c| !c.is_hide_set())
            .map(|c| c.get_name().to_string())
            .collect();
        if partial.starts_with('-') {
            words = flags(root, root);
        }
        return Wanted::Words(filtered(words, partial));
    };
    if partial.starts_with('-') {
        return Wanted::Words(filtered(flags(cmd, root), partial));
    }
    let names_next = cmd.get_positionals().any(|a| a.get_id() == "name") && positionals == 0;
    match names_next {
        true => Wanted::Names(partial.to_string()),
        false => Wanted::Words(Vec::new()),
    }
}

fn filtered(words: Vec<String>, partial: &str) -> Vec<String> {
    words.into_iter().filter(|w| w.starts_with(partial)).collect()
}

/// Cobra's completion answer; names are listed from the cluster, and an unreachable one
/// completes nothing rather than failing the shell.
pub async fn answer(client: Result<(Client, String), String>, words: &[String]) -> Result<ExitCode, String> {
    let found = match wanted(&crate::Cli::command(), words) {
        Wanted::Words(w) => w,
        Wanted::Names(prefix) => match client {
            Ok((client, ns)) => Api::<LangfuseUpgrade>::namespaced(client, &ns)
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items
                        .into_iter()
                        .filter_map(|u| u.metadata.name)
                        .filter(|n| n.starts_with(&prefix))
                        .collect()
                })
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        },
    };
    for word in found {
        println!("{word}");
    }
    println!(":4");
    Ok(ExitCode::SUCCESS)
}

/// The script for `shell`, for the `kubectl-lfu` binary.
pub fn script<C: CommandFactory>(shell: clap_complete::Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut C::command(), "kubectl-lfu", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(words: &[&str]) -> Wanted {
        let root = crate::Cli::command();
        wanted(&root, &words.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn subcommands_flags_values_and_names_complete_where_each_belongs() {
        match ask(&["st"]) {
            Wanted::Words(w) => assert_eq!(w, ["status"]),
            other => panic!("{other:?}"),
        }
        assert_eq!(ask(&["status", "to"]), Wanted::Names("to".into()));
        assert_eq!(ask(&["-n", "langfuse", "handoff", ""]), Wanted::Names(String::new()));
        assert_eq!(
            ask(&["handoff", "to-v3", "--chart", "2"]),
            Wanted::Words(vec!["2.0.0".into()])
        );
        match ask(&["status", "to-v3", "--w"]) {
            Wanted::Words(w) => assert_eq!(w, ["--watch"]),
            other => panic!("{other:?}"),
        }
        // A name given: nothing more to name.
        assert_eq!(ask(&["status", "to-v3", ""]), Wanted::Words(Vec::new()));
        match ask(&[""]) {
            Wanted::Words(w) => assert!(w.contains(&"list".to_string()) && !w.iter().any(|x| x.starts_with("__"))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_shell_gets_a_script_for_the_plugin_binary() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let s = script::<crate::Cli>(shell);
            assert!(s.contains("kubectl-lfu") && s.contains("handoff"), "{shell}: {s}");
        }
    }
}
