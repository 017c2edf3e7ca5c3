//! Dropping large values (old packs, parse caches) on a thread of their own,
//! off the swap path.

/// Drops `value` on a thread of its own (freeing a large pack takes
/// milliseconds); in place if no thread can be made (a task limit), rather
/// than panicking with the datapath held.
pub fn drop_in_background<T: Send + 'static>(value: T) {
    let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(value)));
    let theirs = slot.clone();
    let spawned = std::thread::Builder::new().name("egress-free".into()).spawn(move || {
        drop(theirs.lock().map(|mut v| v.take()));
    });
    if spawned.is_err() {
        drop(slot.lock().map(|mut v| v.take()));
    }
}
