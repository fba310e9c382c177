//! Odradek storage engine.
pub mod io;
