//! Placement of keys on nodes for Chorus.
