//! One workload client: it owns a set of keys under each of its tenants, writes them through
//! the target (insert, append by update, delete), reads each write back, and keeps what each
//! key must hold. Anomalies it can see as it goes (a read that misses its own write, a version
//! going back, another tenant's row, a refused write that took effect) are counted here; the
//! rest at the end by [`crate::check`].
//!
//! A failed write is one of two things, as the target says ([`WriteError`]): a definite
//! refusal, after which the key must hold what it held (read back at once: holding the
//! refused write is a `phantom`), or an unknown outcome, after which the write may or may not
//! have taken effect and the key is read to learn which (either is fine; anything else leaves
//! the key unknown and unjudged).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use ferry_domain::TenantId;

use crate::check::{Anomalies, Kind};
use crate::target::{Seen, Target, WriteError};

/// Who a client is and what it writes.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub client: u32,
    pub tenants: Vec<TenantId>,
    pub keys_per_tenant: u32,
    pub seed: u64,
}

/// What a key must hold, as far as its client knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    Absent,
    Present {
        appends: String,
    },
    /// A write of unknown outcome that a read could not resolve: not judged.
    Unknown,
}

/// What a client did and saw.
#[derive(Debug, Default)]
pub struct ClientRun {
    pub ops: u64,
    /// Writes whose outcome was unknown (they may or may not have taken effect).
    pub unknown: u64,
    /// Writes refused with a definite error (they must not have taken effect).
    pub refused: u64,
    pub anomalies: Anomalies,
    pub examples: Vec<String>,
    /// Every key it wrote, by (tenant, id), with what it must hold now.
    pub keys: BTreeMap<(TenantId, i64), KeyState>,
}

impl ClientRun {
    fn anomaly(&mut self, kind: Kind, example: String) {
        self.anomalies.count(kind);
        if self.examples.len() < 20 {
            self.examples.push(example);
        }
    }
}

/// The id of key `j` of tenant number `t` of `client`: unique across clients and tenants (for
/// `j` below 10,000 and `t` below 100,000), so a row found under any other tenant is
/// misrouted. (With a million per client, tenant 100 of one client met tenant 0 of the next.)
pub fn key_id(client: u32, t: usize, j: u32) -> i64 {
    i64::from(client) * 1_000_000_000 + t as i64 * 10_000 + i64::from(j)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Runs one client until `stop` is set; returns what it did and saw.
pub async fn run_client(
    target: &dyn Target,
    settings: &ClientSettings,
    stop: &AtomicBool,
) -> ClientRun {
    run_client_counted(target, settings, stop, &AtomicU64::new(0)).await
}

/// [`run_client`], counting every operation the target answered without an error in
/// `progress` as it goes (a fault test waits on it to see the client recover).
pub async fn run_client_counted(
    target: &dyn Target,
    settings: &ClientSettings,
    stop: &AtomicBool,
    progress: &AtomicU64,
) -> ClientRun {
    let target = &Counted {
        target,
        ok: progress,
    };
    let mut run = ClientRun::default();
    let mut versions: BTreeMap<(TenantId, i64), i64> = BTreeMap::new();
    let mut rng = Rng(settings.seed | 1);
    let tenants = settings.tenants.len().max(1);
    while !stop.load(Ordering::Relaxed) && !settings.tenants.is_empty() {
        let r = rng.next();
        let t = (r % tenants as u64) as usize;
        let j = ((r >> 16) % u64::from(settings.keys_per_tenant.max(1))) as u32;
        let tenant = settings.tenants[t].clone();
        let id = key_id(settings.client, t, j);
        let slot = (tenant.clone(), id);
        let state = run.keys.get(&slot).cloned().unwrap_or(KeyState::Absent);
        if state == KeyState::Unknown {
            continue;
        }
        run.ops += 1;
        let token = format!("c{}.{}", settings.client, run.ops);
        let next = match write(target, &mut run, &tenant, id, &state, &token, r).await {
            Written::Acknowledged(expected) => {
                read_back(target, &mut run, &mut versions, &tenant, id, &expected).await;
                expected
            }
            Written::Refused { after } => {
                refused(target, &mut run, &tenant, id, &state, &after).await;
                state
            }
            Written::Unknown { after } => {
                resolve(target, &mut run, &tenant, id, &[state, after]).await
            }
        };
        run.keys.insert(slot, next);
        if run.ops % 16 == 0 && tenants > 1 {
            probe_other_tenant(target, &mut run, settings, t, id).await;
        }
    }
    run
}

/// What a write's answer says the key holds now.
enum Written {
    /// Acknowledged: the key holds this.
    Acknowledged(KeyState),
    /// Refused with a definite error: the key still holds what it held, never `after`.
    Refused { after: KeyState },
    /// Of unknown outcome: the key holds what it held or `after`.
    Unknown { after: KeyState },
}

impl Written {
    fn failed(error: WriteError, after: KeyState) -> Written {
        match error {
            WriteError::Refused(_) => Written::Refused { after },
            WriteError::Unknown(_) => Written::Unknown { after },
        }
    }
}

/// One write of the key, and what its answer says.
async fn write(
    target: &dyn Target,
    run: &mut ClientRun,
    tenant: &TenantId,
    id: i64,
    state: &KeyState,
    token: &str,
    r: u64,
) -> Written {
    match state {
        KeyState::Absent => match target.insert(tenant, id, token).await {
            Ok(seen) => {
                check_tenant(run, tenant, id, &seen);
                Written::Acknowledged(present(token))
            }
            Err(e) => Written::failed(e, present(token)),
        },
        KeyState::Present { appends } if r >> 40 & 3 == 0 => {
            match target.delete(tenant, id).await {
                Ok(true) => Written::Acknowledged(KeyState::Absent),
                Ok(false) => {
                    run.anomaly(
                        Kind::Lost,
                        format!("{tenant}/{id}: delete found no row, expected {appends:?}"),
                    );
                    Written::Acknowledged(KeyState::Absent)
                }
                Err(e) => Written::failed(e, KeyState::Absent),
            }
        }
        KeyState::Present { appends } => {
            let next = format!("{appends} {token}");
            match target.update(tenant, id, &next).await {
                Ok(Some(seen)) => {
                    check_tenant(run, tenant, id, &seen);
                    Written::Acknowledged(present(&next))
                }
                Ok(None) => {
                    run.anomaly(
                        Kind::Lost,
                        format!("{tenant}/{id}: update found no row, expected {appends:?}"),
                    );
                    Written::Acknowledged(KeyState::Absent)
                }
                Err(e) => Written::failed(e, present(&next)),
            }
        }
        // Not written (the caller skips unknown keys); nothing changes.
        KeyState::Unknown => Written::Acknowledged(KeyState::Unknown),
    }
}

fn present(appends: &str) -> KeyState {
    KeyState::Present {
        appends: appends.to_owned(),
    }
}

/// After a write of unknown outcome: which of the `possible` states the key is in, by reading
/// it; [`KeyState::Unknown`] (not judged, never written again) if the read fails or shows
/// something else. `MovedTable` fails such a write only after it levelled the key under its
/// lock, which waits out the write's own transaction, so the read sees the outcome.
async fn resolve(
    target: &dyn Target,
    run: &mut ClientRun,
    tenant: &TenantId,
    id: i64,
    possible: &[KeyState],
) -> KeyState {
    run.unknown += 1;
    let now = match target.get(tenant, id).await {
        Ok(None) => KeyState::Absent,
        Ok(Some(seen)) => present(&seen.appends),
        Err(_) => return KeyState::Unknown,
    };
    if possible.contains(&now) {
        now
    } else {
        KeyState::Unknown
    }
}

/// After a definite refusal: the key must still hold `before`; holding `after` is a phantom
/// (the write took effect although the client was told it did not).
async fn refused(
    target: &dyn Target,
    run: &mut ClientRun,
    tenant: &TenantId,
    id: i64,
    before: &KeyState,
    after: &KeyState,
) {
    run.refused += 1;
    let now = match target.get(tenant, id).await {
        Ok(None) => KeyState::Absent,
        Ok(Some(seen)) => present(&seen.appends),
        Err(_) => return,
    };
    if now == *after && now != *before {
        run.anomaly(
            Kind::Phantom,
            format!("{tenant}/{id}: a refused write took effect: holds {now:?}, not {before:?}"),
        );
    } else if now != *before {
        run.anomaly(
            Kind::StaleRead,
            format!("{tenant}/{id}: after a refused write, expected {before:?}, read {now:?}"),
        );
    }
}

/// Reads the key right after writing it: the read must show the write (read your writes), and
/// the version must not go back.
async fn read_back(
    target: &dyn Target,
    run: &mut ClientRun,
    versions: &mut BTreeMap<(TenantId, i64), i64>,
    tenant: &TenantId,
    id: i64,
    expected: &KeyState,
) {
    let Ok(read) = target.get(tenant, id).await else {
        return;
    };
    match (expected, &read) {
        (KeyState::Present { appends }, Some(seen)) if &seen.appends == appends => {
            check_tenant(run, tenant, id, seen);
            let last = versions.entry((tenant.clone(), id)).or_insert(i64::MIN);
            if seen.version < *last {
                let example = format!("{tenant}/{id}: version {} after {}", seen.version, *last);
                run.anomaly(Kind::VersionRegression, example);
            }
            *last = (*last).max(seen.version);
        }
        (KeyState::Absent, None) => {}
        _ => run.anomaly(
            Kind::StaleRead,
            format!("{tenant}/{id}: wrote {expected:?}, read {read:?}"),
        ),
    }
}

fn check_tenant(run: &mut ClientRun, tenant: &TenantId, id: i64, seen: &Seen) {
    if seen.tenant != tenant.as_str() {
        run.anomaly(
            Kind::CrossTenant,
            format!("{tenant}/{id}: the row read is tenant {}'s", seen.tenant),
        );
    }
}

/// Reads this client's key under another tenant, which never wrote that id: must be nothing.
async fn probe_other_tenant(
    target: &dyn Target,
    run: &mut ClientRun,
    settings: &ClientSettings,
    t: usize,
    id: i64,
) {
    let other = &settings.tenants[(t + 1) % settings.tenants.len()];
    if let Ok(Some(seen)) = target.get(other, id).await {
        run.anomaly(
            Kind::CrossTenant,
            format!(
                "{other}/{id}: found {seen:?}, a key only tenant {} writes",
                settings.tenants[t]
            ),
        );
    }
}

/// A target that counts every answer without an error.
struct Counted<'a> {
    target: &'a dyn Target,
    ok: &'a AtomicU64,
}

impl Counted<'_> {
    fn count<T, E>(&self, answer: Result<T, E>) -> Result<T, E> {
        if answer.is_ok() {
            self.ok.fetch_add(1, Ordering::Relaxed);
        }
        answer
    }
}

#[async_trait]
impl Target for Counted<'_> {
    async fn insert(&self, tenant: &TenantId, id: i64, appends: &str) -> Result<Seen, WriteError> {
        self.count(self.target.insert(tenant, id, appends).await)
    }

    async fn update(
        &self,
        tenant: &TenantId,
        id: i64,
        appends: &str,
    ) -> Result<Option<Seen>, WriteError> {
        self.count(self.target.update(tenant, id, appends).await)
    }

    async fn delete(&self, tenant: &TenantId, id: i64) -> Result<bool, WriteError> {
        self.count(self.target.delete(tenant, id).await)
    }

    async fn get(&self, tenant: &TenantId, id: i64) -> Result<Option<Seen>, String> {
        self.count(self.target.get(tenant, id).await)
    }
}
