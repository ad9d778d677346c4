#![no_main]

// See ipfs_kit_p2p::fuzzing::rpc_response for what this feeds.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ipfs_kit_p2p::fuzzing::rpc_response(data));
