//! [`History`] from a git repository (a checkout or a bare mirror), through the `git` command.

use std::path::PathBuf;
use std::process::Command;

use super::History;

pub struct Git {
    pub dir: PathBuf,
}

impl Git {
    fn run(&self, args: &[&str]) -> Result<Option<String>, String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.dir)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run git: {e}"))?;
        match out.status.success() {
            true => Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned())),
            false => Ok(None),
        }
    }
}

impl History for Git {
    fn tags(&self) -> Result<Vec<String>, String> {
        let out = self
            .run(&["tag", "--list"])?
            .ok_or_else(|| format!("{} is not a git repository", self.dir.display()))?;
        Ok(out.lines().map(String::from).collect())
    }

    fn list(&self, tag: &str, dir: &str) -> Result<Vec<String>, String> {
        let spec = format!("{tag}:{dir}");
        let out = self.run(&["ls-tree", "--name-only", &spec])?.unwrap_or_default();
        Ok(out.lines().map(String::from).collect())
    }

    fn read(&self, tag: &str, path: &str) -> Result<Option<String>, String> {
        self.run(&["show", &format!("{tag}:{path}")])
    }
}
