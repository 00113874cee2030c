//! kiln-gateway
