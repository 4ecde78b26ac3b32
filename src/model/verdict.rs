//! Cluster conditions and the one-word verdict. The conditions are derived from the latest
//! readings (by `assess`); the verdict is the first [`Verdict`] that holds, in declaration order.

label_enum! {
    /// A condition of the cluster: the `condition` label, each its own 0/1 series.
    pub enum Condition {
        /// A known member does not answer or its PostgreSQL is not running.
        ReplicaDown = "replica_down",
        /// A leader exists and no replica is running.
        NoReplica = "no_replica",
        /// No member claims the primary role.
        NoLeader = "no_leader",
        /// Writes through HAProxy fail while a leader exists: refused as read-only, or, with the
        /// DCS quorum lost, the last DCS leader is up but no longer primary (demoted).
        ReadOnly = "read_only",
        DcsQuorumLost = "dcs_quorum_lost",
        /// HAProxy is unreachable or routes the primary port nowhere while a member takes writes.
        /// With a virtual IP: no path through it works (nobody holds it, or its holder's HAProxy
        /// is down or routes nowhere).
        EntryPointDown = "entry_point_down",
        /// More than one member claims primary.
        SplitBrain = "split_brain",
        /// Nothing answers at the virtual IP: no instance holds the address.
        VipNoHolder = "vip_no_holder",
        /// The virtual IP is held, but its holder's HAProxy refuses or does not answer.
        VipHolderDown = "vip_holder_down",
        /// More than one instance says it is the VRRP master (a VRRP split brain).
        VipSplitBrain = "vip_split_brain",
        /// No other instance could take the virtual IP over: none is a VRRP backup whose HAProxy
        /// routes to the primary.
        EntryNoStandby = "entry_no_standby",
    }
}

/// Every condition, plus what only the verdict uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Conditions {
    holds: [bool; Condition::COUNT],
    /// The read probe fails.
    pub reads_failing: bool,
    /// No Patroni member answered: the exporter cannot tell.
    pub unknown: bool,
}

impl Conditions {
    pub fn holds(&self, c: Condition) -> bool {
        self.holds[c.index()]
    }

    pub fn set(&mut self, c: Condition, on: bool) {
        self.holds[c.index()] = on;
    }

    pub fn each(&self) -> impl Iterator<Item = (Condition, bool)> + '_ {
        Condition::ALL.iter().map(|c| (*c, self.holds(*c)))
    }
}

label_enum! {
    /// The verdict: the `verdict` label, one-hot. Declared in precedence order.
    pub enum Verdict {
        Unknown = "unknown",
        EntryPointDown = "entry_point_down",
        SplitBrain = "split_brain",
        DcsQuorumLost = "dcs_quorum_lost",
        ReadOnly = "read_only",
        NoLeader = "no_leader",
        NoReplica = "no_replica",
        /// A replica down, reads failing, or the virtual IP in trouble or without a standby.
        Degraded = "degraded",
        Healthy = "healthy",
    }
}

impl Verdict {
    fn holds(self, c: &Conditions) -> bool {
        match self {
            Verdict::Unknown => c.unknown,
            Verdict::EntryPointDown => c.holds(Condition::EntryPointDown),
            Verdict::SplitBrain => c.holds(Condition::SplitBrain),
            Verdict::DcsQuorumLost => c.holds(Condition::DcsQuorumLost),
            Verdict::ReadOnly => c.holds(Condition::ReadOnly),
            Verdict::NoLeader => c.holds(Condition::NoLeader),
            Verdict::NoReplica => c.holds(Condition::NoReplica),
            Verdict::Degraded => {
                let entry = [
                    Condition::VipNoHolder,
                    Condition::VipHolderDown,
                    Condition::VipSplitBrain,
                    Condition::EntryNoStandby,
                ];
                let entry = entry.iter().any(|e| c.holds(*e));
                c.holds(Condition::ReplicaDown) || c.reads_failing || entry
            }
            Verdict::Healthy => true,
        }
    }

    /// The first verdict that holds.
    pub fn of(c: &Conditions) -> Verdict {
        Verdict::ALL.iter().copied().find(|v| v.holds(c)).unwrap_or(Verdict::Healthy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_is_the_declaration_order() {
        let mut c = Conditions::default();
        assert_eq!(Verdict::of(&c), Verdict::Healthy);
        c.reads_failing = true;
        assert_eq!(Verdict::of(&c), Verdict::Degraded);
        c.set(Condition::NoLeader, true);
        c.set(Condition::ReadOnly, true);
        assert_eq!(Verdict::of(&c), Verdict::ReadOnly);
        c.set(Condition::DcsQuorumLost, true);
        assert_eq!(Verdict::of(&c), Verdict::DcsQuorumLost);
        c.set(Condition::EntryPointDown, true);
        assert_eq!(Verdict::of(&c), Verdict::EntryPointDown);
        c.unknown = true;
        assert_eq!(Verdict::of(&c), Verdict::Unknown);
        assert_eq!(c.each().filter(|(_, on)| *on).count(), 4);
    }
}
