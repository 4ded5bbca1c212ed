//! How many of one client's GraphQL requests are read and checked at once.
//!
//! Reading a body (up to 256 KiB), parsing it and measuring its document is the work a
//! flood of hostile documents buys for free: every one is refused, but only after that
//! work. At most `GRAPHQL_ADMISSION_PER_IP` requests of one client address go through it
//! at a time; the others wait their turn before their body is read, so they cost neither
//! memory nor a place in the runtime's queue, and other clients (and `/healthz`) are
//! served meanwhile. Execution happens after the pass is given back, so a long chat
//! answer holds nothing here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One gate per client address that has requests being read.
pub struct Admission {
    per_ip: usize,
    gates: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
}

/// A turn at reading and checking one request; given back when dropped.
pub struct Pass<'a> {
    admission: &'a Admission,
    ip: IpAddr,
    permit: Option<OwnedSemaphorePermit>,
}

impl Admission {
    /// `None` when the limit is off (0).
    pub fn new(per_ip: u32) -> Option<Self> {
        (per_ip > 0).then(|| Self {
            per_ip: per_ip as usize,
            gates: Mutex::new(HashMap::new()),
        })
    }

    /// Waits for a turn of `ip`'s.
    pub async fn enter(&self, ip: IpAddr) -> Pass<'_> {
        let gate = self
            .lock()
            .entry(ip)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_ip)))
            .clone();
        let permit = gate
            .acquire_owned()
            .await
            .expect("admission gates are never closed");
        Pass {
            admission: self,
            ip,
            permit: Some(permit),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Arc<Semaphore>>> {
        self.gates.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Addresses with requests being read or waiting.
    pub fn clients(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut gates = self.admission.lock();
        // Nobody else holds or awaits this address's gate: forget it.
        if gates
            .get(&self.ip)
            .is_some_and(|gate| Arc::strong_count(gate) == 1)
        {
            gates.remove(&self.ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_address_waits_its_turn_and_others_do_not() {
        let admission = Admission::new(2).unwrap();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = admission.enter(a).await;
        let second = admission.enter(a).await;
        let third = tokio::time::timeout(Duration::from_millis(50), admission.enter(a)).await;
        assert!(third.is_err(), "a third request of the same address waits");
        let other = tokio::time::timeout(Duration::from_millis(50), admission.enter(b)).await;
        assert!(other.is_ok(), "another address does not");
        drop(other);
        drop(first);
        let third = tokio::time::timeout(Duration::from_millis(50), admission.enter(a)).await;
        assert!(third.is_ok(), "a turn given back is taken");
        drop(third);
        drop(second);
        assert_eq!(admission.clients(), 0, "idle addresses are forgotten");
        assert!(Admission::new(0).is_none());
    }
}
