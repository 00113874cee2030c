//! kiln-monitor
