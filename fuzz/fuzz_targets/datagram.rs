#![no_main]

// See ipfs_kit_p2p::fuzzing::datagram for what this feeds.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ipfs_kit_p2p::fuzzing::datagram(data));
