//! argon2 hashing for the whole process: the dev connector's passwords,
//! client secrets, registration secrets. argon2 is memory-hard (19 MiB per
//! hash with the default parameters), so it runs on a small dedicated pool of
//! threads, each reusing one memory buffer, behind one fair queue with a
//! bounded length and wait:
//!
//! * memory is bounded by `threads × largest m_cost` and does not grow with
//!   the number of requests (tokio's blocking pool would start up to 512
//!   threads, each with its own malloc arena that keeps freed memory);
//! * a burst beyond the queue is refused at once ([`Busy`]) instead of
//!   queueing without end, so callers answer 503 quickly.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;
use tokio::sync::{oneshot, Semaphore};

/// The pool is full: too many hashes are queued, or the wait was too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks are queued; try again shortly")]
pub struct Busy;

/// The most memory one hash may ask for (KiB). Stored hashes asking for
/// more are refused: they would let one configuration line exhaust memory.
pub const MAX_M_COST_KIB: u32 = 64 * 1024;
/// The most passes one hash may ask for.
pub const MAX_T_COST: u32 = 16;
/// The most lanes one hash may ask for.
pub const MAX_P_COST: u32 = 8;

/// How the pool is sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    /// Hashes computed at once (threads, each with its own buffer).
    pub threads: usize,
    /// Hashes that may wait for a thread; more are refused at once.
    pub max_waiting: usize,
    /// How long a hash may wait for a thread before it is refused.
    pub max_wait: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Self {
            threads: cores.clamp(1, 8),
            max_waiting: 64,
            max_wait: Duration::from_secs(2),
        }
    }
}

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// A hashing thread idle this long frees its buffer. Threads wait for the
/// queue in turn, so all of them have freed theirs after `threads` times this.
const IDLE_RELEASE: std::time::Duration = std::time::Duration::from_secs(10);

struct Pool {
    settings: PoolSettings,
    /// One permit per thread; tokio's semaphore is fair (first come, first served).
    slots: Semaphore,
    waiting: AtomicUsize,
    jobs: Mutex<mpsc::Sender<Job>>,
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// Sizes the pool; only the first call (or first use) counts. Returns false
/// when the pool was already running with other settings.
pub fn configure(settings: PoolSettings) -> bool {
    pool_with(settings).settings == settings
}

fn pool() -> &'static Pool {
    pool_with(PoolSettings::default())
}

fn pool_with(settings: PoolSettings) -> &'static Pool {
    POOL.get_or_init(|| {
        let threads = settings.threads.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("gatehouse-hash-{i}"))
                .spawn(move || {
                    // This thread's argon2 memory, reused by every hash.
                    let mut memory: Vec<Block> = Vec::new();
                    loop {
                        let job = {
                            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
                            rx.recv_timeout(IDLE_RELEASE)
                        };
                        match job {
                            Ok(job) => job(&mut memory),
                            // Idle: give the buffer (19 MiB at the default
                            // cost) back rather than hold it for a burst
                            // that may never come.
                            Err(mpsc::RecvTimeoutError::Timeout) => memory = Vec::new(),
                            Err(mpsc::RecvTimeoutError::Disconnected) => break,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        Pool {
            settings: PoolSettings {
                threads,
                ..settings
            },
            slots: Semaphore::new(threads),
            waiting: AtomicUsize::new(0),
            jobs: Mutex::new(tx),
        }
    })
}

/// Decrements the waiting count however the wait ends.
struct Waiting<'a>(&'a AtomicUsize);
impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs `work` on the pool with the thread's buffer.
async fn run<T: Send + 'static>(
    work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
) -> Result<T, Busy> {
    let pool = pool();
    let permit = {
        let waiting = pool.waiting.fetch_add(1, Ordering::AcqRel) + 1;
        let _guard = Waiting(&pool.waiting);
        if waiting > pool.settings.max_waiting + pool.settings.threads {
            return Err(Busy);
        }
        match tokio::time::timeout(pool.settings.max_wait, pool.slots.acquire()).await {
            Ok(Ok(permit)) => permit,
            _ => return Err(Busy),
        }
    };
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move |memory| {
        let _ = tx.send(work(memory));
    });
    let sent = pool
        .jobs
        .lock()
        .map_err(|_| Busy)
        .and_then(|jobs| jobs.send(job).map_err(|_| Busy));
    sent?;
    // The permit is held until the thread is done, so at most `threads`
    // jobs are ever in the channel.
    let out = rx.await.map_err(|_| Busy);
    drop(permit);
    out
}

/// Checks `password` against an argon2 PHC string, in constant time.
/// `Ok(false)` for a wrong password or an unusable hash.
pub async fn verify(password: &str, phc: &str) -> Result<bool, Busy> {
    let password = password.to_string();
    let phc = phc.to_string();
    run(move |memory| verify_with(memory, password.as_bytes(), &phc)).await
}

/// The argon2id PHC string of `secret` (default parameters, random salt).
pub async fn hash(secret: &str) -> Result<Result<String, String>, Busy> {
    let secret = secret.to_string();
    run(move |memory| hash_with(memory, secret.as_bytes())).await
}

/// Why a PHC string cannot be used here.
pub fn check_phc(phc: &str) -> Result<(), String> {
    let hash = PasswordHash::new(phc).map_err(|e| e.to_string())?;
    parts(&hash).map(|_| ())
}

fn parts<'a>(hash: &'a PasswordHash<'a>) -> Result<(Argon2<'static>, &'a [u8]), String> {
    let algorithm = Algorithm::try_from(hash.algorithm).map_err(|e| e.to_string())?;
    let version = match hash.version {
        Some(v) => Version::try_from(v).map_err(|e| e.to_string())?,
        None => Version::default(),
    };
    let params = Params::try_from(hash).map_err(|e| e.to_string())?;
    if params.m_cost() > MAX_M_COST_KIB
        || params.t_cost() > MAX_T_COST
        || params.p_cost() > MAX_P_COST
    {
        return Err(format!(
            "argon2 parameters above the limit (m <= {MAX_M_COST_KIB} KiB, t <= {MAX_T_COST}, p <= {MAX_P_COST})"
        ));
    }
    let expected = hash
        .hash
        .as_ref()
        .ok_or_else(|| "the PHC string has no hash".to_string())?;
    Ok((Argon2::new(algorithm, version, params), expected.as_bytes()))
}

fn memory_for<'m>(memory: &'m mut Vec<Block>, ctx: &Argon2<'_>) -> &'m mut [Block] {
    let need = ctx.params().block_count();
    if memory.len() < need {
        memory.resize(need, Block::default());
    }
    &mut memory[..need]
}

fn verify_with(memory: &mut Vec<Block>, password: &[u8], phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (ctx, expected) = match parts(&hash) {
        Ok(p) => p,
        Err(why) => {
            tracing::warn!(%why, "a stored password hash cannot be checked");
            return false;
        }
    };
    let Some(salt) = hash.salt else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    if ctx
        .hash_password_into_with_memory(password, salt, &mut out, memory_for(memory, &ctx))
        .is_err()
    {
        return false;
    }
    out.ct_eq(expected).into()
}

fn hash_with(memory: &mut Vec<Block>, secret: &[u8]) -> Result<String, String> {
    use argon2::password_hash::rand_core::OsRng;
    use argon2::password_hash::{Output, ParamsString};
    let salt = SaltString::generate(&mut OsRng);
    let ctx = Argon2::default();
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buf).map_err(|e| e.to_string())?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    ctx.hash_password_into_with_memory(secret, salt_bytes, &mut out, memory_for(memory, &ctx))
        .map_err(|e| e.to_string())?;
    let phc = PasswordHash {
        algorithm: Algorithm::default().ident(),
        version: Some(Version::default().into()),
        params: ParamsString::try_from(ctx.params()).map_err(|e| e.to_string())?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
    };
    Ok(phc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, PasswordVerifier};

    fn reference_hash(p: &str) -> String {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(p.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn verifies_hashes_made_by_the_argon2_crate() {
        let phc = reference_hash("s3cret");
        assert_eq!(verify("s3cret", &phc).await, Ok(true));
        assert_eq!(verify("s3cret!", &phc).await, Ok(false));
        assert_eq!(verify("s3cret", "not a hash").await, Ok(false));
    }

    #[tokio::test]
    async fn hashes_verify_with_the_argon2_crate() {
        let phc = hash("hello").await.unwrap().unwrap();
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(Argon2::default().verify_password(b"hello", &parsed).is_ok());
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    }

    #[test]
    fn oversized_parameters_are_refused() {
        let huge = "$argon2id$v=19$m=4194304,t=2,p=1$DdyCBm3CaX8h2fDebOJg7w$lwWRRk3zY1yYHotbfe34wdjFwJbHjd2UVpI1bHgwdgc";
        assert!(check_phc(huge).is_err());
        let mut memory = Vec::new();
        assert!(!verify_with(&mut memory, b"x", huge));
        assert!(memory.is_empty(), "nothing was allocated");
    }
}
