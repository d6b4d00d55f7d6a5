//! One async function per behaviour of the contract (being written).
