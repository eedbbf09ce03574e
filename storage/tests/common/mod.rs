//! Helpers shared by the storage integration tests.
#![allow(dead_code)]

use chorus_storage::hlc::Timestamp;
use chorus_storage::object::Object;
use chorus_storage::version::{ActorId, Dot, VersionVector};

/// An object holding one version written by `actor` with `counter`, from an empty context.
pub fn object(actor: u64, counter: u64, value: &[u8]) -> Object {
    let mut object = Object::new();
    object
        .write(
            &VersionVector::new(),
            Dot::new(ActorId(actor), counter),
            Timestamp::new(counter, 0),
            Some(value.to_vec()),
        )
        .expect("a fresh object takes any dot");
    object
}

/// The live values of an object, in dot order.
pub fn values(object: &Object) -> Vec<Vec<u8>> {
    object
        .siblings()
        .iter()
        .filter_map(|s| s.value.as_deref().map(<[u8]>::to_vec))
        .collect()
}
