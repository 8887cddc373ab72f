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

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
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

    /// Appends `events` to this writer's file and syncs it.
    pub fn append(&mut self, events: &[Pending]) -> Result<(), SpoolError> {
        let mut lines = Vec::new();
        for pending in events {
            serde_json::to_writer(&mut lines, pending)
                .map_err(|e| at(&self.dir)(std::io::Error::other(e)))?;
            lines.push(b'\n');
        }
        let tail = match self.tail.take() {
            Some(tail) if tail.events < FILE_EVENTS => tail,
            _ => self.new_tail()?,
        };
        let tail = self.tail.insert(tail);
        tail.file.write_all(&lines).map_err(at(&tail.path))?;
        tail.file.sync_data().map_err(at(&tail.path))?;
        tail.events += events.len();
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
            let Ok(file) = File::open(&path) else {
                continue;
            };
            if file.try_lock().is_err() {
                continue;
            }
            // Deleted by the writer that held it while this one waited: already committed.
            if file.metadata().map(|m| m.nlink() == 0).unwrap_or(true) {
                continue;
            }
            let events = read(&path, &file)?;
            return Ok(Some((Loaded { path, _lock: file }, events)));
        }
        Ok(None)
    }

    /// Every event read from `loaded` is committed: the file goes.
    pub fn finish(&self, loaded: Loaded) -> Result<(), SpoolError> {
        std::fs::remove_file(&loaded.path).map_err(at(&loaded.path))
    }
}

/// The events in a spool file. A line that does not parse (the last one, torn by a crash in the
/// middle of a write) is reported and skipped: the rest of the file still counts.
fn read(path: &Path, file: &File) -> Result<Vec<Pending>, SpoolError> {
    let mut events = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(at(path))?;
        match serde_json::from_str::<Pending>(&line) {
            Ok(pending) => events.push(pending),
            Err(e) => tracing::error!(
                file = %path.display(),
                line = n + 1,
                error = %e,
                "audit spool line unreadable; skipped"
            ),
        }
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
}
