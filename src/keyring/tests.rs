//! The keyring store's protocol against a keyring of the tests' own: the companion's counter,
//! the order of reads and writes, and errors that never carry the entry's bytes.
