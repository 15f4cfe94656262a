//! The JetStream KV backend. (Being built.)
