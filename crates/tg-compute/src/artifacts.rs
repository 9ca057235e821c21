//! Model artifacts over the network: a node that holds a model provides it
//! in the DHT under the model's content id; a node without it fetches each
//! pinned file from providers in parts, checks its SHA-256 and only then moves
//! it into place. Only files pinned by a [`ModelSpec`] are ever served or
//! written, so a request cannot name a path.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tg_net::PeerId;
use tg_tasks::{ArtifactId, MINILM, ModelSpec};

use crate::{ARTIFACT_PART_BYTES, ComputeError, Msg};

/// Answers a fetch: the part of a pinned file at `offset`, or that it is not here.
pub fn serve(root: &Path, id: &[u8; 32], offset: u64) -> Msg {
    let aid = ArtifactId(*id);
    let Some(file) = MINILM.file_by_id(&aid) else {
        return Msg::NoArtifact { id: *id };
    };
    let path = root.join(MINILM.dir).join(file.name);
    let read = || -> std::io::Result<Vec<u8>> {
        let mut f = std::fs::File::open(&path)?;
        let len = f.metadata()?.len();
        if len != file.size || offset > len {
            return Err(std::io::Error::other("size differs from the pin"));
        }
        f.seek(SeekFrom::Start(offset))?;
        let mut buf = vec![0u8; (ARTIFACT_PART_BYTES as u64).min(len - offset) as usize];
        f.read_exact(&mut buf)?;
        Ok(buf)
    };
    match read() {
        Ok(data) => Msg::Part {
            id: *id,
            offset,
            total: file.size,
            data,
        },
        Err(_) => Msg::NoArtifact { id: *id },
    }
}

/// A model being fetched, file by file.
pub struct Fetch {
    root: PathBuf,
    spec: &'static ModelSpec,
    file: usize,
    offset: u64,
    /// The file being written, and the hash of what was written so far:
    /// a finished file is checked without reading it back, which would
    /// stall the node's event loop for a whole model.
    part: Option<(std::fs::File, Sha256)>,
    providers: Vec<PeerId>,
    provider: usize,
    asked: Option<Instant>,
    looked: Option<Instant>,
    lookup: Option<tokio::sync::oneshot::Receiver<Vec<PeerId>>>,
    banned: std::collections::HashSet<PeerId>,
    /// Providers that were too slow (or too often busy) for a file: asked
    /// again only when no other provider is found.
    slow: std::collections::HashSet<PeerId>,
    /// Busy answers from the current provider for the current file.
    busy: u32,
    retry_at: Option<Instant>,
    /// When the current provider was first asked for the current file.
    file_since: Option<Instant>,
    /// Only slow providers were found: no time budget.
    lenient: bool,
}

/// An ask unanswered this long goes to the next provider.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// A busy provider is asked again after this long.
const BUSY_RETRY: Duration = Duration::from_secs(1);
/// Busy answers from one provider for one file before the fetch moves on.
pub const MAX_BUSY: u32 = 60;
/// The slowest rate a provider may serve a file at (plus a minute of
/// grace) before the fetch moves on: 90 MB in about seven minutes.
const MIN_RATE_BYTES_PER_S: u64 = 256 * 1024;

impl Fetch {
    /// Starts fetching `spec` into `root/spec.dir`.
    pub fn new(root: PathBuf, spec: &'static ModelSpec) -> Self {
        Self {
            root,
            spec,
            file: 0,
            offset: 0,
            part: None,
            providers: Vec::new(),
            provider: 0,
            asked: None,
            looked: None,
            lookup: None,
            banned: Default::default(),
            slow: Default::default(),
            busy: 0,
            retry_at: None,
            file_since: None,
            lenient: false,
        }
    }

    fn dir(&self) -> PathBuf {
        self.root.join(self.spec.dir)
    }

    /// Whether every file is in place.
    pub fn finished(&mut self) -> bool {
        while self.file < self.spec.files.len()
            && self.dir().join(self.spec.files[self.file].name).is_file()
        {
            self.file += 1;
            self.offset = 0;
        }
        self.file >= self.spec.files.len()
    }

    /// Looks up providers when it has none (in the background, never blocking
    /// the node) and asks one for the next part when nothing is outstanding
    /// (or the last ask went unanswered for 10 s).
    pub fn poll(&mut self, client: &tg_net::Client) -> Option<(PeerId, Msg)> {
        if self.finished() {
            return None;
        }
        if let Some(rx) = self.lookup.as_mut() {
            match rx.try_recv() {
                Ok(found) => {
                    let me = client.local_peer_id();
                    let found: Vec<PeerId> = found
                        .into_iter()
                        .filter(|p| *p != me && !self.banned.contains(p))
                        .collect();
                    self.providers = found
                        .iter()
                        .filter(|p| !self.slow.contains(p))
                        .copied()
                        .collect();
                    // Only slow providers are left: ask them again, without a
                    // time budget (this fetcher's own link may be the slow one).
                    self.lenient = self.providers.is_empty() && !found.is_empty();
                    if self.lenient {
                        self.providers = found;
                    }
                    self.provider = 0;
                    self.lookup = None;
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => return None,
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => self.lookup = None,
            }
        }
        if self.providers.is_empty() {
            if self
                .looked
                .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
            {
                return None;
            }
            self.looked = Some(Instant::now());
            let key = crate::node::model_key(&self.spec.id());
            let (tx, rx) = tokio::sync::oneshot::channel();
            let client = client.clone();
            tokio::spawn(async move {
                let found =
                    tokio::time::timeout(Duration::from_secs(10), client.get_providers(&key))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or_default();
                let _ = tx.send(found);
            });
            self.lookup = Some(rx);
            return None;
        }
        // A provider that trickles a file (parts just often enough, or busy
        // answers) is dropped for this fetch once it is over its time budget,
        // whatever is outstanding.
        let size = self.spec.files.get(self.file).map_or(0, |f| f.size);
        let budget = Duration::from_secs(60 + size / MIN_RATE_BYTES_PER_S);
        if !self.lenient && self.file_since.is_some_and(|t| t.elapsed() > budget) {
            self.drop_slow();
        }
        match self.retry_at {
            // A busy provider: asked again, same offset, once its wait is over.
            Some(at) if Instant::now() < at => return None,
            Some(_) => self.retry_at = None,
            None => {
                if self.asked.is_some_and(|t| t.elapsed() < ASK_TIMEOUT) {
                    return None;
                }
                if self.asked.is_some() {
                    // Unanswered: the provider is gone or stalling; once it
                    // has started the file, it is skipped for this fetch.
                    self.give_up_on_provider();
                }
            }
        }
        let peer = *self.providers.get(self.provider)?;
        self.file_since.get_or_insert_with(Instant::now);
        self.asked = Some(Instant::now());
        Some((
            peer,
            Msg::Fetch {
                id: self.spec.files[self.file].id().0,
                offset: self.offset,
            },
        ))
    }

    fn ban(&mut self, peer: PeerId) {
        self.banned.insert(peer);
        self.providers.retain(|p| *p != peer);
        self.provider = 0;
        self.offset = 0;
        self.part = None;
        self.asked = None;
        self.busy = 0;
        self.retry_at = None;
        self.file_since = None;
    }

    /// The current provider is too slow or too busy: skip it for this fetch.
    fn drop_slow(&mut self) {
        if self.provider < self.providers.len() {
            let p = self.providers.remove(self.provider);
            self.slow.insert(p);
        }
        // The next provider takes its place in the list and starts the file over.
        self.busy = 0;
        self.retry_at = None;
        self.file_since = None;
        self.offset = 0;
        self.part = None;
        self.asked = None;
        if self.provider >= self.providers.len() {
            self.providers.clear();
            self.provider = 0;
        }
    }

    fn next_provider(&mut self) {
        // A file restarts with the next provider, so all its parts come from one.
        self.busy = 0;
        self.retry_at = None;
        self.file_since = None;
        self.offset = 0;
        self.part = None;
        self.provider += 1;
        if self.provider >= self.providers.len() {
            self.providers.clear();
            self.provider = 0;
        }
    }

    /// A provider holds it but is serving as many parts as it will: ask it
    /// again in a second from the same offset, so a popular provider slows
    /// a fetch down rather than restarting it. After [`MAX_BUSY`] busy
    /// answers in a row the fetch moves on to the next provider.
    pub fn on_busy(&mut self, peer: PeerId, id: [u8; 32]) {
        if self.providers.get(self.provider) != Some(&peer)
            || self.spec.files.get(self.file).map(|f| f.id().0) != Some(id)
        {
            return;
        }
        self.busy += 1;
        if self.busy >= MAX_BUSY {
            self.drop_slow();
        } else {
            self.retry_at = Some(Instant::now() + BUSY_RETRY);
        }
    }

    /// A provider does not hold it: try another.
    pub fn on_missing(&mut self, peer: PeerId, id: [u8; 32]) {
        if self.providers.get(self.provider) == Some(&peer)
            && self.spec.files.get(self.file).map(|f| f.id().0) == Some(id)
        {
            self.asked = None;
            self.give_up_on_provider();
        }
    }

    /// Moves on from the current provider: into the slow set if it had
    /// started the file (so a trickle cannot be followed by a clean exit
    /// and a fresh start), else simply to the next.
    fn give_up_on_provider(&mut self) {
        if self.file_since.is_some() || self.offset > 0 {
            self.drop_slow();
        } else {
            self.next_provider();
        }
    }

    /// Takes a part; returns the next request, if any. A file whose bytes do
    /// not hash to its pin is deleted and refused (E120), and the provider dropped.
    pub fn on_part(
        &mut self,
        peer: PeerId,
        id: [u8; 32],
        offset: u64,
        total: u64,
        data: &[u8],
    ) -> Result<Option<Msg>, ComputeError> {
        let Some(file) = self.spec.files.get(self.file) else {
            return Ok(None);
        };
        if self.providers.get(self.provider) != Some(&peer)
            || file.id().0 != id
            || offset != self.offset
        {
            return Ok(None); // stale or unsolicited
        }
        // Every part but the last is whole: a provider cannot stall a fetch with tiny parts.
        let want = (u64::from(crate::ARTIFACT_PART_BYTES)).min(file.size.saturating_sub(offset));
        if total != file.size || data.len() as u64 != want {
            self.ban(peer);
            return Err(ComputeError::Artifact(format!(
                "{} sent a part of {} that does not fit its pinned size",
                peer, file.name
            )));
        }
        let dir = self.dir();
        let part_path = dir.join(format!(".{}.part", file.name));
        if self.part.is_none() {
            // A directory this fetch creates is the node's cache, and so
            // may be evicted; one that was already there (a user's) never is.
            let io = |e: std::io::Error| ComputeError::Io(format!("{}: {e}", dir.display()));
            std::fs::create_dir_all(&self.root).map_err(io)?;
            let created = match std::fs::create_dir(&dir) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                Err(e) => return Err(io(e)),
            };
            if created {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(dir.join(crate::cache::FETCHED_MARK))
                    .and_then(|mut f| f.write_all(b"fetched by tensorguard compute\n"))
                    .map_err(io)?;
            }
            let f = std::fs::File::create(&part_path)
                .map_err(|e| ComputeError::Io(format!("{}: {e}", part_path.display())))?;
            self.part = Some((f, Sha256::new()));
        }
        if let Some((f, h)) = self.part.as_mut() {
            f.write_all(data)
                .map_err(|e| ComputeError::Io(e.to_string()))?;
            h.update(data);
        }
        self.offset += data.len() as u64;
        self.retry_at = None;
        self.asked = Some(Instant::now());
        if self.offset < total {
            return Ok(Some(Msg::Fetch {
                id,
                offset: self.offset,
            }));
        }
        let got = match self.part.take() {
            Some((f, h)) => {
                f.sync_all().map_err(|e| ComputeError::Io(e.to_string()))?;
                ArtifactId(h.finalize().into())
            }
            None => ArtifactId::of_file(&part_path).map_err(|e| ComputeError::Io(e.to_string()))?,
        };
        self.offset = 0;
        self.asked = None;
        if got != file.id() {
            let _ = std::fs::remove_file(&part_path);
            // Parts of one file come from one provider (a new provider restarts
            // the file), so the blame is exact; it is not asked again.
            self.ban(peer);
            return Err(ComputeError::Artifact(format!(
                "{} from {peer} hashes to {got}, not the pinned {}; deleted, trying another provider",
                file.name, file.sha256
            )));
        }
        std::fs::rename(&part_path, dir.join(file.name))
            .map_err(|e| ComputeError::Io(e.to_string()))?;
        self.file += 1;
        self.busy = 0;
        self.file_since = Some(Instant::now());
        Ok(self.spec.files.get(self.file).map(|f| Msg::Fetch {
            id: f.id().0,
            offset: 0,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest pinned file (the weights), so parts of full size exist.
    fn big() -> usize {
        (0..MINILM.files.len())
            .max_by_key(|&i| MINILM.files[i].size)
            .unwrap()
    }

    fn fetching_from(dir: &Path, providers: &[PeerId], offset: u64) -> Fetch {
        let mut f = Fetch::new(dir.to_path_buf(), &MINILM);
        f.file = big();
        f.providers = providers.to_vec();
        f.offset = offset;
        f.asked = Some(Instant::now());
        f
    }

    #[test]
    fn a_busy_provider_slows_a_fetch_without_restarting_it() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let id = MINILM.files[big()].id().0;
        let dir = tempfile::tempdir().unwrap();
        let mut f = fetching_from(
            dir.path(),
            &[a, b],
            3 * u64::from(crate::ARTIFACT_PART_BYTES),
        );
        f.on_busy(a, id);
        assert_eq!(f.offset, 3 * u64::from(crate::ARTIFACT_PART_BYTES));
        assert_eq!(f.providers[f.provider], a);
        assert!(f.retry_at.is_some());
        // Busy for another file, or from a peer not being asked: ignored.
        f.on_busy(b, id);
        f.on_busy(a, MINILM.files[(big() + 1) % MINILM.files.len()].id().0);
        assert_eq!(f.busy, 1);
        // A part does not reset the count: a provider cannot trickle a file
        // with 59 busy answers per part.
        let part = vec![0u8; crate::ARTIFACT_PART_BYTES as usize];
        let _ = f.on_part(a, id, f.offset, MINILM.files[big()].size, &part);
        assert!(f.retry_at.is_none());
        // Busy too often: the next provider, from the start of the file, and
        // the busy one is skipped for the rest of the fetch.
        for _ in 1..MAX_BUSY {
            f.on_busy(a, id);
        }
        assert_eq!(f.providers, vec![b]);
        assert_eq!(f.providers[f.provider], b);
        assert_eq!(f.offset, 0);
        assert_eq!(f.busy, 0);
        assert!(f.retry_at.is_none());
        assert!(f.slow.contains(&a));
    }

    #[test]
    fn a_provider_over_its_time_budget_for_a_file_is_dropped() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let dir = tempfile::tempdir().unwrap();
        let mut f = fetching_from(
            dir.path(),
            &[a, b],
            8 * u64::from(crate::ARTIFACT_PART_BYTES),
        );
        // Asked for this file long ago (beyond 60 s + size at 256 KiB/s),
        // and a part was just asked for: the budget holds whatever is outstanding.
        f.file_since = Instant::now().checked_sub(Duration::from_secs(3600));
        assert!(f.asked.is_some());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, _events, ev) = tg_net::new(
                [9; 32],
                tg_net::Config::new(tg_net::Role::Compute, Vec::new()),
            )
            .unwrap();
            tokio::spawn(ev.run());
            let (to, m) = f.poll(&client).unwrap();
            assert_eq!(to, b);
            assert_eq!(
                m,
                Msg::Fetch {
                    id: MINILM.files[big()].id().0,
                    offset: 0
                }
            );
        });
        assert!(f.slow.contains(&a));
    }

    #[test]
    fn a_provider_without_the_artifact_moves_the_fetch_on_at_once() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let id = MINILM.files[big()].id().0;
        let dir = tempfile::tempdir().unwrap();
        let mut f = fetching_from(dir.path(), &[a, b], u64::from(crate::ARTIFACT_PART_BYTES));
        f.on_missing(a, id);
        assert_eq!(f.providers[f.provider], b);
        assert_eq!(f.offset, 0);
    }

    #[test]
    fn a_fetch_marks_only_a_directory_it_creates() {
        let part = vec![0u8; crate::ARTIFACT_PART_BYTES as usize];
        let a = PeerId::random();
        let id = MINILM.files[big()].id().0;
        for existed in [false, true] {
            let root = tempfile::tempdir().unwrap();
            if existed {
                std::fs::create_dir_all(root.path().join(MINILM.dir)).unwrap();
            }
            let mut f = fetching_from(root.path(), &[a], 0);
            f.on_part(a, id, 0, MINILM.files[big()].size, &part)
                .unwrap();
            assert_eq!(
                root.path()
                    .join(MINILM.dir)
                    .join(crate::cache::FETCHED_MARK)
                    .is_file(),
                !existed,
                "existed before the fetch: {existed}"
            );
        }
    }
}
