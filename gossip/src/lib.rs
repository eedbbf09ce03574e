//! Cluster membership for Chorus.
