//! The act's application: writers through both routers, each owning the keys `id % WRITERS`
//! of every tenant so the last acknowledged write of a key is known; a buffer worker; and the
//! final read of every key.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use ferry_domain::TenantId;
use ferry_tier::{Row, TableError};

use super::{Act, TierAnomalies, TierOperations, WRITERS};

/// The writers' record: `(tenant index, id) -> note` as last acknowledged (`None`: deleted).
pub(super) type Expected = HashMap<(usize, i64), Option<String>>;

fn note_row(note: &str) -> Row {
    let mut row = Row::new();
    row.insert("note".into(), serde_json::json!(note));
    row
}

fn note_of(row: Option<&Row>) -> Option<String> {
    row.map(|r| match &r["note"] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// What a seeded row's note is (see the seed in `setup`).
fn seeded(id: i64) -> String {
    if id % 5 == 0 {
        "null".into()
    } else {
        format!("event {id}")
    }
}

impl Act {
    /// One writer: updates (two in three), deletes and inserts of its own keys through one
    /// router, each read back at once through the other.
    pub(super) async fn writer(self: Arc<Self>, w: u64) -> Expected {
        let tenants = self.scenario.tenants.len() as u64;
        let keys = self.rows_per_tenant as u64 + 40;
        let mut mine = Expected::new();
        let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ (w + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
        let mut n = 0u64;
        while !self.stop.load(Relaxed) {
            n += 1;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let t = (x % tenants) as usize;
            let id = (w + WRITERS * ((x >> 16) % (keys / WRITERS))) as i64;
            if id == 0 {
                continue;
            }
            let exists = match mine.get(&(t, id)) {
                Some(note) => note.is_some(),
                None => id <= self.rows_per_tenant,
            };
            let via = (n % 2) as usize;
            let note = format!("w{w}-{n}");
            let tenant = &self.scenario.tenants[t];
            match self.write(via, tenant, id, exists, &note, x).await {
                Ok(now) => {
                    self.writes.fetch_add(1, Relaxed);
                    self.read_back(1 - via, tenant, id, &now).await;
                    mine.insert((t, id), now);
                }
                Err(e) => {
                    self.failed_requests.fetch_add(1, Relaxed);
                    self.say(format!("  tiering   a write of {tenant}/{id} failed: {e}"));
                }
            }
            tokio::task::yield_now().await;
        }
        mine
    }

    /// Writes one key; returns its note as now acknowledged.
    async fn write(
        &self,
        via: usize,
        tenant: &TenantId,
        id: i64,
        exists: bool,
        note: &str,
        roll: u64,
    ) -> Result<Option<String>, TableError> {
        let table = &self.tables[via % self.tables.len()];
        let key = id.to_string();
        if !exists {
            let mut row = note_row(note);
            row.insert("id".into(), serde_json::json!(id));
            row.insert(
                "at".into(),
                serde_json::json!(chrono::Utc::now().to_rfc3339()),
            );
            table.insert(tenant, row).await?;
            return Ok(Some(note.to_owned()));
        }
        if roll.is_multiple_of(4) {
            table.delete(tenant, &[&key]).await?;
            return Ok(None);
        }
        table.update(tenant, &[&key], note_row(note)).await?;
        Ok(Some(note.to_owned()))
    }

    async fn read_back(&self, via: usize, tenant: &TenantId, id: i64, want: &Option<String>) {
        let table = &self.tables[via % self.tables.len()];
        match table.get(tenant, &[&id.to_string()]).await {
            Ok(row) if note_of(row.as_ref()) == *want => {}
            Ok(_) => {
                self.stale_reads.fetch_add(1, Relaxed);
            }
            Err(_) => {
                self.failed_requests.fetch_add(1, Relaxed);
            }
        }
    }

    /// Applies the update buffer of each tenant with pending changes, over and over, as
    /// `ferry tier run --follow` does.
    pub(super) async fn buffer_worker(self: Arc<Self>) {
        while !self.stop.load(Relaxed) {
            let pending = self.scenario.store.open_updates(&self.migration).await;
            let mut tenants: Vec<TenantId> = pending
                .into_iter()
                .flatten()
                .filter(|u| u.state == "pending")
                .map(|u| u.tenant)
                .collect();
            tenants.sort();
            tenants.dedup();
            for t in &tenants {
                // A failed attempt (the object store down) is counted on the changes and
                // retried on the next pass.
                let _ = self.tiering.apply_buffer(t).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Reads every row of every tenant through the first router (a scan per tenant) and
    /// compares each key with the writers' record and the seed.
    pub(super) async fn check(&self, expected: &Expected) -> anyhow::Result<TierAnomalies> {
        let mut anomalies = TierAnomalies {
            stale_reads: self.stale_reads.load(Relaxed),
            failed_requests: self.failed_requests.load(Relaxed),
            ..TierAnomalies::default()
        };
        for t in &self.scenario.tenants {
            self.tiering.apply_buffer(t).await?;
        }
        let keys = self.rows_per_tenant + 40;
        for (i, tenant) in self.scenario.tenants.iter().enumerate() {
            // One scan per tenant, both tiers merged, instead of a read per key.
            let rows = self.tables[0].scan(tenant, None, None, usize::MAX).await?;
            let mut found: HashMap<i64, Option<String>> = HashMap::new();
            for row in &rows {
                let id = row["id"].as_i64().unwrap_or_default();
                found.insert(id, note_of(Some(row)));
            }
            for id in 1..=keys {
                let want = match expected.get(&(i, id)) {
                    Some(note) => note.clone(),
                    None => (id <= self.rows_per_tenant).then(|| seeded(id)),
                };
                let got = found.remove(&id).flatten();
                match (&want, &got) {
                    (Some(_), None) => anomalies.lost += 1,
                    (None, Some(_)) => anomalies.resurrected += 1,
                    (Some(w), Some(g)) if w != g => anomalies.lost += 1,
                    _ => {}
                }
            }
            // A row with a key no writer ever used.
            anomalies.resurrected += found.len() as u64;
        }
        Ok(anomalies)
    }

    pub(super) fn operations(&self) -> TierOperations {
        let mut ops = TierOperations::default();
        for table in &self.tables {
            let s = &table.stats;
            ops.reads_hot += s.reads_hot.load(Relaxed);
            ops.reads_cold += s.reads_cold.load(Relaxed);
            ops.writes_hot += s.writes_hot.load(Relaxed);
            ops.buffered += s.buffered.load(Relaxed);
            ops.fallbacks += s.fallbacks.load(Relaxed);
            ops.cold_errors += s.cold_errors.load(Relaxed);
            ops.duplicates_refused += s.duplicates_refused.load(Relaxed);
        }
        ops
    }
}
