//! Audit events the database would not take wait here, on disk, until it takes them: an outage
//! of any length, a restart or a crash in the middle of one loses none of them, and memory stays
//! bounded however many requests are refused meanwhile.
//!
//! The spool is a directory of JSON Lines files named by creation time, so the oldest comes
//! first. A writer appends to its own file (its *tail*, synced after each batch, locked while
//! open) and starts a new one every [`FILE_EVENTS`] events. To write them, a writer locks the
//! oldest file no one else holds, reads it whole and deletes it once every event in it is
//! committed. Instances may share the directory: a file left by an instance that stopped is
//! written by whichever instance next reads the spool. Each event keeps its id, so one committed
//! before a crash could delete its file is recognised and not written twice.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::Pending;

/// Events per spool file: what is read into memory at once.
pub const FILE_EVENTS: usize = 8192;

#[derive(Debug, thiserror::Error)]
#[error("audit spool {path}: {source}")]
pub struct SpoolError {
    path: PathBuf,
    source: std::io::Error,
}

fn at(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError {
        path: path.to_path_buf(),
        source,
    }
}

pub struct Spool {
    dir: PathBuf,
    tail: Option<Tail>,
}

/// The file this writer appends to.
struct Tail {
    path: PathBuf,
    file: File,
    events: usize,
}

/// A spool file read into memory, locked until its events are committed.
pub struct Loaded {
    path: PathBuf,
    _lock: File,
}

impl Spool {
    /// Opens (creating) the spool directory.
    pub fn open(dir: &Path) -> Result<Self, SpoolError> {
        std::fs::create_dir_all(dir).map_err(at(dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            tail: None,
        })
    }

    /// Appends `events` to this writer's file and syncs it. On failure the file is cut back to
    /// what it held, so no half line is left for the next append to join, and set aside.
    pub fn append(&mut self, events: &[Pending]) -> Result<(), SpoolError> {
        let lines = self.lines(events)?;
        let mut tail = match self.tail.take() {
            Some(tail) if tail.events < FILE_EVENTS => tail,
            _ => self.new_tail()?,
        };
        let before = tail.file.metadata().map_err(at(&tail.path))?.len();
        let written = tail
            .file
            .write_all(&lines)
            .and_then(|()| tail.file.sync_data());
        if let Err(e) = written {
            // The tail is dropped either way: after a failed sync its contents are unknown. A
            // new file that took nothing goes too, or a full disk would leave one per attempt.
            let undone = if before == 0 {
                std::fs::remove_file(&tail.path)
            } else {
                tail.file.set_len(before)
            };
            if let Err(undo) = undone {
                tracing::error!(file = %tail.path.display(), error = %undo, "audit spool file could not be cut back");
            }
            return Err(at(&tail.path)(e));
        }
        tail.events += events.len();
        self.tail = Some(tail);
        Ok(())
    }

    fn new_tail(&self) -> Result<Tail, SpoolError> {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let name = format!("{millis:015}-{}.jsonl", uuid::Uuid::new_v4().simple());
        let path = self.dir.join(name);
        // Made and locked under another name, so no reader finds it before it is held.
        let making = path.with_extension("new");
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&making)
            .map_err(at(&making))?;
        file.lock().map_err(at(&making))?;
        std::fs::rename(&making, &path).map_err(at(&path))?;
        // The file's name must survive a crash as well as its contents.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(at(&self.dir))?;
        Ok(Tail {
            path,
            file,
            events: 0,
        })
    }

    /// The oldest file no other writer holds, with its events; this writer's own file is closed
    /// first so it can be read too. `None` when the spool is empty (or every file is held).
    pub fn take_oldest(&mut self) -> Result<Option<(Loaded, Vec<Pending>)>, SpoolError> {
        self.tail = None;
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(at(&self.dir))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        paths.sort();
        for path in paths {
            // Read and write: NFS emulates these locks with POSIX ones, which need it.
            let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else {
                continue;
            };
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Error(e)) => return Err(at(&path)(e)),
            }
            // Removed by the writer that held it between the listing and the lock: written.
            if file.metadata().map(|m| m.nlink() == 0).unwrap_or(true) {
                continue;
            }
            // A file that cannot be read now must not keep the newer ones waiting.
            match read(&path, &file) {
                Ok(events) => return Ok(Some((Loaded { path, _lock: file }, events))),
                Err(e) => {
                    tracing::error!(error = %e, "audit spool file unreadable; left for later")
                }
            }
        }
        Ok(None)
    }

    /// Keeps events the database refused for good (not for being away) in a `.rejected` file.
    pub fn reject_events(&self, events: &[&Pending]) -> Result<PathBuf, SpoolError> {
        write_rejected(&self.dir, "refused", &self.lines(events.iter().copied())?)
    }

    /// `events` as JSON Lines.
    fn lines<'a>(
        &self,
        events: impl IntoIterator<Item = &'a Pending>,
    ) -> Result<Vec<u8>, SpoolError> {
        let mut lines = Vec::new();
        for pending in events {
            serde_json::to_writer(&mut lines, pending)
                .map_err(|e| at(&self.dir)(std::io::Error::other(e)))?;
            lines.push(b'\n');
        }
        Ok(lines)
    }

    /// Every event read from `loaded` is committed: the file goes.
    pub fn finish(&self, loaded: Loaded) -> Result<(), SpoolError> {
        std::fs::remove_file(&loaded.path).map_err(at(&loaded.path))
    }
}

/// Keeps `content` that could not all be written in a `.rejected` file for an operator to look
/// at; nothing else reads those files.
fn write_rejected(dir: &Path, name: &str, content: &[u8]) -> Result<PathBuf, SpoolError> {
    let path = dir.join(format!("{name}-{}.rejected", uuid::Uuid::new_v4().simple()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(at(&path))?;
    file.write_all(content)
        .and_then(|()| file.sync_all())
        .map_err(at(&path))?;
    Ok(path)
}

/// The events in a spool file. A last line without its newline was torn by a crash in the middle
/// of a write: it was never acknowledged, and is skipped. Any other line that does not parse
/// (or an event format this version does not know) is not lost: the whole file is copied to a
/// `.rejected` file first.
fn read(path: &Path, mut file: &File) -> Result<Vec<Pending>, SpoolError> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(at(path))?;
    let torn = !bytes.is_empty() && !bytes.ends_with(b"\n");
    let lines: Vec<&[u8]> = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut events = Vec::with_capacity(lines.len());
    let mut bad = 0;
    for (n, line) in lines.iter().enumerate() {
        match serde_json::from_slice::<Pending>(line) {
            Ok(pending) => events.push(pending),
            Err(_) if torn && n + 1 == lines.len() => {
                tracing::warn!(file = %path.display(), "audit spool file ends in a torn line; skipped");
            }
            Err(e) => {
                bad += 1;
                tracing::error!(file = %path.display(), line = n + 1, error = %e, "audit spool line unreadable");
            }
        }
    }
    if bad > 0 {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = path.parent().unwrap_or(Path::new("."));
        let copy = write_rejected(dir, &name, &bytes)?;
        tracing::error!(copy = %copy.display(), lines = bad, "audit spool file had unreadable lines; kept a copy");
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::tests::event;

    fn pending(route: &str) -> Pending {
        Pending {
            id: uuid::Uuid::new_v4().simple().to_string(),
            event: event(route),
        }
    }

    fn routes(events: &[Pending]) -> Vec<&str> {
        events.iter().map(|p| p.event.route.as_str()).collect()
    }

    #[test]
    fn events_come_back_oldest_first_and_a_held_file_is_left_to_its_holder()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut a = Spool::open(dir.path())?;
        let mut b = Spool::open(dir.path())?;
        a.append(&[pending("/1")])?;
        a.append(&[pending("/2"), pending("/3")])?;
        assert!(b.take_oldest()?.is_none(), "a's file is open for writing");

        let (loaded, events) = a.take_oldest()?.ok_or("a finds its own file")?;
        assert_eq!(routes(&events), ["/1", "/2", "/3"]);
        assert!(b.take_oldest()?.is_none(), "a is writing it back");
        a.append(&[pending("/4")])?;
        a.finish(loaded)?;

        // An instance that stopped leaves its file to the others.
        drop(a);
        let (loaded, events) = b.take_oldest()?.ok_or("b takes the file a left")?;
        assert_eq!(routes(&events), ["/4"]);
        b.finish(loaded)?;
        assert!(b.take_oldest()?.is_none());
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
        Ok(())
    }

    #[test]
    fn a_full_file_gives_way_to_a_new_one_and_a_torn_line_is_skipped()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut spool = Spool::open(dir.path())?;
        let batch: Vec<Pending> = (0..FILE_EVENTS).map(|_| pending("/full")).collect();
        spool.append(&batch)?;
        spool.append(&[pending("/next")])?;
        // A crash in the middle of a write leaves half a line at the end.
        let newest = std::fs::read_dir(dir.path())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .max()
            .ok_or("no file")?;
        OpenOptions::new()
            .append(true)
            .open(&newest)?
            .write_all(br#"{"id":"torn","ev"#)?;

        let (first, events) = spool.take_oldest()?.ok_or("the full file")?;
        assert_eq!(events.len(), FILE_EVENTS);
        spool.finish(first)?;
        let (second, events) = spool.take_oldest()?.ok_or("the newer file")?;
        assert_eq!(routes(&events), ["/next"]);
        spool.finish(second)?;
        Ok(())
    }

    #[test]
    fn a_file_with_an_unreadable_line_is_copied_aside_before_the_rest_is_written()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut spool = Spool::open(dir.path())?;
        spool.append(&[pending("/1")])?;
        let path = std::fs::read_dir(dir.path())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .next()
            .ok_or("no file")?;
        // A line from an event format this version does not know, then bytes cut mid-character.
        let mut file = OpenOptions::new().append(true).open(&path)?;
        file.write_all(b"{\"id\":\"x\",\"event\":{\"from\":\"a newer obgate\"}}\n")?;
        file.write_all(&[0xe2, 0x82, b'\n'])?;
        drop(file);
        spool.append(&[pending("/2")])?;

        let (loaded, events) = spool.take_oldest()?.ok_or("the file")?;
        assert_eq!(routes(&events), ["/1", "/2"], "what is readable is written");
        spool.finish(loaded)?;
        let kept: Vec<PathBuf> = std::fs::read_dir(dir.path())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        assert_eq!(kept.len(), 1);
        assert!(kept[0].extension().is_some_and(|e| e == "rejected"));
        assert!(String::from_utf8_lossy(&std::fs::read(&kept[0])?).contains("a newer obgate"));
        Ok(())
    }
}
