//! Seeded chaos simulations (filled below).
