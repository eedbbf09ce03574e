//! Versioned values and their storage for Chorus.
