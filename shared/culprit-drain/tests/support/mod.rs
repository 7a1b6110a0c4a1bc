#![allow(dead_code)]
pub mod loghub;
