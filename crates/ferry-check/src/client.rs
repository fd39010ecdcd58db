//! One workload client: it owns a set of keys under each of its tenants, writes them through
//! the target (insert, append by update, delete), reads each write back, and keeps what each
//! key must hold. Anomalies it can see as it goes (a read that misses its own write, a version
//! going back, another tenant's row) are counted here; the rest at the end by [`crate::check`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use ferry_domain::TenantId;

use crate::check::{Anomalies, Kind};
use crate::target::{Seen, Target};

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
    pub unknown: u64,
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
        let next = write(target, &mut run, &tenant, id, &state, &token, r).await;
        if let Some(expected) = &next {
            read_back(target, &mut run, &mut versions, &tenant, id, expected).await;
        }
        run.keys.insert(slot, next.unwrap_or(KeyState::Unknown));
        if run.ops % 16 == 0 && tenants > 1 {
            probe_other_tenant(target, &mut run, settings, t, id).await;
        }
    }
    run
}

/// One write of the key; the state it must now hold (`None`: unknown even after a read).
async fn write(
    target: &dyn Target,
    run: &mut ClientRun,
    tenant: &TenantId,
    id: i64,
    state: &KeyState,
    token: &str,
    r: u64,
) -> Option<KeyState> {
    match state {
        KeyState::Absent => match target.insert(tenant, id, token).await {
            Ok(seen) => {
                check_tenant(run, tenant, id, &seen);
                Some(present(token))
            }
            Err(_) => resolve(target, run, tenant, id, &[KeyState::Absent, present(token)]).await,
        },
        KeyState::Present { appends } if r >> 40 & 3 == 0 => {
            match target.delete(tenant, id).await {
                Ok(true) => Some(KeyState::Absent),
                Ok(false) => {
                    run.anomaly(
                        Kind::Lost,
                        format!("{tenant}/{id}: delete found no row, expected {appends:?}"),
                    );
                    Some(KeyState::Absent)
                }
                Err(_) => {
                    resolve(target, run, tenant, id, &[state.clone(), KeyState::Absent]).await
                }
            }
        }
        KeyState::Present { appends } => {
            let next = format!("{appends} {token}");
            match target.update(tenant, id, &next).await {
                Ok(Some(seen)) => {
                    check_tenant(run, tenant, id, &seen);
                    Some(present(&next))
                }
                Ok(None) => {
                    run.anomaly(
                        Kind::Lost,
                        format!("{tenant}/{id}: update found no row, expected {appends:?}"),
                    );
                    Some(KeyState::Absent)
                }
                Err(_) => resolve(target, run, tenant, id, &[state.clone(), present(&next)]).await,
            }
        }
        KeyState::Unknown => None,
    }
}

fn present(appends: &str) -> KeyState {
    KeyState::Present {
        appends: appends.to_owned(),
    }
}

/// After a write of unknown outcome: which of the `possible` states the key is in, by reading
/// it; `None` if the read fails or shows something else.
async fn resolve(
    target: &dyn Target,
    run: &mut ClientRun,
    tenant: &TenantId,
    id: i64,
    possible: &[KeyState],
) -> Option<KeyState> {
    run.unknown += 1;
    let now = match target.get(tenant, id).await.ok()? {
        None => KeyState::Absent,
        Some(seen) => present(&seen.appends),
    };
    possible.contains(&now).then_some(now)
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
