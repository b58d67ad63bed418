//! Checks what the server holds against the clients' ledgers.
//!
//! For each byte of a file the writes covering its offset are listed in
//! the order the owner made them. If one of them was acknowledged as
//! durable, the byte must come from the last such write or a later one (a
//! later write may have reached the disk, acknowledged or not); if none
//! was, it may also be zero (never written, or the write lost). A byte no
//! rule allows, a missing durable name, a durably removed name that is
//! back, or a name no client created, is a violation.

use super::{content_byte, ClientLedger, FileRecord};
use std::collections::BTreeMap;

/// What the server holds: each directory's entries, each file's bytes.
pub type Tree = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

/// Checks one file's bytes (`None`: the name does not exist) against its
/// record; returns the violations, each with the client and operation.
pub fn check_file(label: &str, record: &FileRecord, found: Option<&[u8]>) -> Vec<String> {
    let path = record.key.path();
    let Some(bytes) = found else {
        if record.create_durable && !record.remove_attempted {
            return vec![format!(
                "{label}: {path} is missing, but its creation was acknowledged as durable"
            )];
        }
        if record.writes.iter().any(|write| write.durable) && !record.remove_attempted {
            return vec![format!(
                "{label}: {path} is missing, but writes to it were acknowledged as durable"
            )];
        }
        return Vec::new();
    };
    if !record.create_acknowledged && record.writes.is_empty() && !bytes.is_empty() {
        return vec![format!(
            "{label}: {path} holds {} bytes, but no write to it was made",
            bytes.len()
        )];
    }
    if record.remove_durable {
        return vec![format!(
            "{label}: {path} exists, but its removal was acknowledged as durable"
        )];
    }
    let durable_end = record
        .writes
        .iter()
        .filter(|write| write.durable)
        .map(|write| write.offset + write.length)
        .max()
        .unwrap_or(0);
    let limit = (bytes.len() as u64).max(durable_end);
    let mut breakpoints: Vec<u64> = vec![0, bytes.len() as u64, limit];
    for write in &record.writes {
        breakpoints.push(write.offset);
        breakpoints.push(write.offset + write.length);
    }
    breakpoints.retain(|&at| at <= limit);
    breakpoints.sort_unstable();
    breakpoints.dedup();
    for segment in breakpoints.windows(2) {
        let (start, end) = (segment[0], segment[1]);
        let covering: Vec<usize> = record
            .writes
            .iter()
            .enumerate()
            .filter(|(_, write)| write.offset <= start && write.offset + write.length >= end)
            .map(|(index, _)| index)
            .collect();
        let last_durable = covering
            .iter()
            .rposition(|&index| record.writes[index].durable);
        let allowed = &covering[last_durable.unwrap_or(0)..];
        for offset in start..end {
            let Some(&byte) = bytes.get(offset as usize) else {
                // Past the end: lost only where a durable write reaches.
                let Some(position) = last_durable else {
                    break;
                };
                let write = &record.writes[covering[position]];
                return vec![format!(
                    "{label}: {path} ends at {} bytes, but write v{} of {}..{} was acknowledged \
                     as durable by {}",
                    bytes.len(),
                    write.version,
                    write.offset,
                    write.offset + write.length,
                    write.made_durable_by
                )];
            };
            let matches = allowed.iter().rev().any(|&index| {
                content_byte(record.key, record.writes[index].version, offset) == byte
            });
            if matches || (last_durable.is_none() && byte == 0) {
                continue;
            }
            return vec![match last_durable {
                Some(position) => {
                    let write = &record.writes[covering[position]];
                    format!(
                        "{label}: {path} byte {offset} is {byte:#04x}: not write v{} of {}..{} \
                         (acknowledged as durable by {}) nor any later write",
                        write.version,
                        write.offset,
                        write.offset + write.length,
                        write.made_durable_by
                    )
                }
                None => format!(
                    "{label}: {path} byte {offset} is {byte:#04x}: no write of this client put \
                     it there ({} writes cover it)",
                    covering.len()
                ),
            }];
        }
    }
    Vec::new()
}

/// The prefix of the hidden name guest-driver gives a file unlinked while
/// open (the NFS "silly rename"); removed at the file's last close, left
/// behind if the server dies first (as NFS clients leave `.nfsXXXX`).
pub const HIDDEN_PREFIX: &str = ".guest-driver-";

/// What [`check_tree`] found.
#[derive(Debug, Default)]
pub struct TreeReport {
    /// What the durability rules do not allow.
    pub violations: Vec<String>,
    /// Hidden names of files unlinked while open that a restart left.
    pub hidden_leftovers: Vec<String>,
}

/// Checks the whole tree: every client's directory and files, and that
/// nothing else exists.
pub fn check_tree(ledgers: &[&ClientLedger], tree: &Tree) -> TreeReport {
    let mut report = TreeReport::default();
    let expected: BTreeMap<String, &ClientLedger> = ledgers
        .iter()
        .map(|ledger| (format!("c{}", ledger.client), *ledger))
        .collect();
    for name in tree.keys() {
        if !expected.contains_key(name) {
            report
                .violations
                .push(format!("/{name} exists, but no client made it"));
        }
    }
    for (directory, ledger) in &expected {
        let Some(entries) = tree.get(directory) else {
            report.violations.push(format!(
                "{}: its directory /{directory} is missing (made durable before the run)",
                ledger.label
            ));
            continue;
        };
        for name in entries.keys() {
            if name.starts_with(HIDDEN_PREFIX) {
                report.hidden_leftovers.push(format!("/{directory}/{name}"));
                continue;
            }
            let known = name
                .strip_prefix('f')
                .and_then(|number| number.parse::<u32>().ok())
                .is_some_and(|file| ledger.files.contains_key(&file));
            if !known {
                report.violations.push(format!(
                    "{}: /{directory}/{name} exists, but the client never created it",
                    ledger.label
                ));
            }
        }
        for (file, record) in &ledger.files {
            let found = entries.get(&format!("f{file}")).map(Vec::as_slice);
            report
                .violations
                .extend(check_file(&ledger.label, record, found));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{content, FileKey};

    fn record() -> FileRecord {
        let mut ledger = ClientLedger::new(0, "t".into(), super::super::NameDurability::OnReply);
        ledger.begin_create(1);
        ledger.create_acknowledged(1);
        ledger.file(1).clone()
    }

    const KEY: FileKey = FileKey { client: 0, file: 1 };

    #[test]
    fn a_durable_write_must_be_there_and_later_writes_may_replace_it() {
        let mut file = record();
        let first = file.begin_write(0, 100);
        file.write_acknowledged(first, None, None);
        file.synced("fsync", None);
        let second = file.begin_write(50, 100);
        file.write_acknowledged(second, None, None);
        let mut bytes = content(KEY, 1, 0, 100);
        assert!(check_file("t", &file, Some(&bytes)).is_empty());
        bytes.extend(content(KEY, 2, 100, 50));
        bytes[50..100].copy_from_slice(&content(KEY, 2, 50, 50));
        assert!(check_file("t", &file, Some(&bytes)).is_empty());
        // Shorter than the durable write: lost.
        assert_eq!(check_file("t", &file, Some(&bytes[..99])).len(), 1);
        // A byte nobody wrote.
        bytes[10] ^= 0xFF;
        assert_eq!(check_file("t", &file, Some(&bytes)).len(), 1);
        // The file gone although its creation was durable.
        assert_eq!(check_file("t", &file, None).len(), 1);
    }

    #[test]
    fn unsynced_writes_may_be_lost_and_errors_void_later_syncs() {
        let mut file = record();
        let first = file.begin_write(0, 10);
        file.write_acknowledged(first, None, None);
        file.error_reported();
        file.synced("fsync", None);
        assert!(!file.writes[0].durable);
        assert!(check_file("t", &file, Some(&[])).is_empty());
        assert!(check_file("t", &file, Some(&[0; 10])).is_empty());
        // An NFS COMMIT covers only writes that got its verifier.
        let second = file.begin_write(0, 10);
        file.write_acknowledged(second, None, Some([1; 8]));
        let third = file.begin_write(10, 10);
        file.write_acknowledged(third, None, Some([2; 8]));
        file.synced("COMMIT", Some([2; 8]));
        assert!(!file.writes[1].durable && file.writes[2].durable);
    }
}
