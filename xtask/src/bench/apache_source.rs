//! Debian's apache2 source for the Apache build workload.
//!
//! `apt-get source` needs deb-src entries, which a stock system lacks; the
//! bench does not touch the system's apt configuration but runs apt-get
//! against a private state directory whose deb-src entries mirror the
//! system's own entries for its release.

use crate::process::execute;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's apache2 source (.orig tarball), fetched once into the work
/// directory's cache with `apt-get source` against a private apt state
/// whose deb-src entries mirror the system's own Debian entries.
pub fn tarball(work: &Path) -> Result<PathBuf, String> {
    let cache = work.join("cache");
    let sources = cache.join("src");
    let find = || -> Option<PathBuf> {
        std::fs::read_dir(&sources)
            .ok()?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| {
                path.file_name().is_some_and(|name| {
                    let name = name.to_string_lossy();
                    name.starts_with("apache2_") && name.ends_with(".orig.tar.gz")
                })
            })
    };
    if let Some(tarball) = find() {
        return Ok(tarball);
    }
    let fetch = || -> anyhow::Result<()> {
        let apt = cache.join("apt");
        std::fs::create_dir_all(apt.join("lists/partial"))?;
        std::fs::create_dir_all(apt.join("cache/archives/partial"))?;
        std::fs::create_dir_all(&sources)?;
        let list = apt.join("sources.sources");
        std::fs::write(&list, deb_src_entries()?)?;
        let options = [
            format!("Dir::Etc::SourceList={}", list.display()),
            "Dir::Etc::SourceParts=/nonexistent".to_owned(),
            format!("Dir::State::Lists={}", apt.join("lists").display()),
            format!("Dir::Cache={}", apt.join("cache").display()),
        ];
        let apt_get = |arguments: &[&str]| {
            let mut command = Command::new("apt-get");
            for option in &options {
                command.args(["-o", option]);
            }
            command.args(arguments).current_dir(&sources);
            command
        };
        execute(&mut apt_get(&["update", "-qq"]))?;
        execute(&mut apt_get(&["source", "--download-only", "apache2"]))
    };
    fetch().map_err(|error| format!("cannot fetch Debian's apache2 source: {error:#}"))?;
    find().ok_or_else(|| "apt-get source apache2 left no .orig.tar.gz".to_owned())
}

/// deb822 `deb-src` entries for the system's Debian release, made from its
/// own `deb` entries (deb822 `.sources` files and one-line `.list` files)
/// whose suite is exactly the release's codename.
fn deb_src_entries() -> anyhow::Result<String> {
    let os_release = std::fs::read_to_string("/etc/os-release").context("/etc/os-release")?;
    let codename = os_release
        .lines()
        .find_map(|line| line.strip_prefix("VERSION_CODENAME="))
        .map(|value| value.trim_matches('"').to_owned())
        .context("/etc/os-release names no VERSION_CODENAME")?;
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    let mut out = String::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let deb822 = file
            .extension()
            .is_some_and(|extension| extension == "sources");
        out.push_str(&deb_src_from(&codename, deb822, &text));
    }
    if out.is_empty() {
        bail!("no apt entry for {codename} to derive a deb-src entry from");
    }
    Ok(out)
}

/// The `deb-src` entries (deb822) for `codename` made from the `deb`
/// entries of one apt sources file: deb822 when `deb822`, else one-line.
fn deb_src_from(codename: &str, deb822: bool, text: &str) -> String {
    let mut out = String::new();
    if deb822 {
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza.lines().find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    key.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| value.trim().to_owned())
                })
            };
            let (Some(types), Some(uris), Some(suites)) =
                (field("Types"), field("URIs"), field("Suites"))
            else {
                continue;
            };
            if !types.split_whitespace().any(|kind| kind == "deb")
                || !suites.split_whitespace().any(|suite| suite == codename)
            {
                continue;
            }
            out.push_str(&format!(
                "Types: deb-src\nURIs: {uris}\nSuites: {codename}\nComponents: {}\n",
                field("Components").unwrap_or_else(|| "main".into())
            ));
            // A key file; an inline key (a multi-line field) is left out
            // and apt falls back to its trusted keyrings.
            if let Some(signed_by) = field("Signed-By").filter(|value| value.starts_with('/')) {
                out.push_str(&format!("Signed-By: {signed_by}\n"));
            }
            out.push('\n');
        }
    } else {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut words = line.split_whitespace();
            if words.next() != Some("deb") {
                continue;
            }
            let mut options = String::new();
            let mut uri = words.next();
            if uri.is_some_and(|word| word.starts_with('[')) {
                let mut option_words = vec![uri.unwrap_or_default().to_owned()];
                while !option_words.last().is_some_and(|word| word.ends_with(']')) {
                    match words.next() {
                        Some(word) => option_words.push(word.to_owned()),
                        None => break,
                    }
                }
                options = option_words.join(" ");
                uri = words.next();
            }
            let (Some(uri), Some(suite)) = (uri, words.next()) else {
                continue;
            };
            if suite != codename {
                continue;
            }
            let components: Vec<&str> = words.collect();
            let signed_by = options
                .trim_matches(['[', ']'])
                .split_whitespace()
                .find_map(|option| option.strip_prefix("signed-by="));
            out.push_str(&format!(
                "Types: deb-src\nURIs: {uri}\nSuites: {codename}\nComponents: {}\n",
                components.join(" ")
            ));
            if let Some(signed_by) = signed_by {
                out.push_str(&format!("Signed-By: {signed_by}\n"));
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::deb_src_from;

    #[test]
    fn deb822_entries_of_the_release_become_deb_src() {
        let text = "Types: deb\n# a comment: with a colon\nURIs: http://mirror.invalid/debian\n\
                    Suites: bookworm bookworm-updates\nComponents: main contrib\n\
                    Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                    Types: deb\nURIs: http://mirror.invalid/debian-security\n\
                    Suites: bookworm-security\nComponents: main\n";
        assert_eq!(
            deb_src_from("bookworm", true, text),
            "Types: deb-src\nURIs: http://mirror.invalid/debian\nSuites: bookworm\n\
             Components: main contrib\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        );
    }

    #[test]
    fn one_line_entries_keep_their_keyring_and_skip_other_suites() {
        let text = "deb [arch=amd64 signed-by=/k.gpg] http://mirror.invalid/debian bookworm main\n\
                    deb-src http://mirror.invalid/debian bookworm main\n\
                    # deb http://mirror.invalid/debian bookworm contrib\n\
                    deb http://other.invalid/apt cloud-sdk-bookworm main\n";
        assert_eq!(
            deb_src_from("bookworm", false, text),
            "Types: deb-src\nURIs: http://mirror.invalid/debian\nSuites: bookworm\n\
             Components: main\nSigned-By: /k.gpg\n\n"
        );
        assert_eq!(deb_src_from("trixie", false, text), "");
    }
}
