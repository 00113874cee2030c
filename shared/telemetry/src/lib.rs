//! kiln-telemetry
