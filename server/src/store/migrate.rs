//! Moving the control plane from SQLite to JetStream KV. (Being built.)
