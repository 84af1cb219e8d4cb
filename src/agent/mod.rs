//! The agent side (placeholder).
