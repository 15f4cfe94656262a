//! The Merkle tree of a rekey manifest: RFC 9162 (Certificate Transparency version 2), section
//! 2.1, with SHA-256.
//!
//! A manifest's header commits to all of its entries through the root of this tree, so one
//! member can check its own entry with an audit path of at most ⌈log2 n⌉ hashes instead of
//! fetching all `n` entries (`docs/protocol.md` §8.2).
//!
//! ```text
//! leaf hash   = SHA-256(0x00 || leaf bytes)
//! node hash   = SHA-256(0x01 || left || right)
//! MTH({d0})   = leaf hash of d0
//! MTH(D[n])   = node hash(MTH(D[0:k]), MTH(D[k:n]))   where k is the largest power of two < n
//! ```
//!
//! [`MerkleTree`] holds every level of a tree, built once in O(n) hashes, and gives the root
//! and any leaf's audit path ([`MerkleTree::proof`], RFC 9162 §2.1.3.1) in O(log n).
//! [`verify_inclusion`] is the verification algorithm of RFC 9162 §2.1.3.2.
//!
//! ```
//! use unibus::manifest::merkle::{leaf_hash, verify_inclusion, MerkleTree};
//!
//! let leaves: Vec<_> = [b"a", b"b", b"c", b"d", b"e"].iter().map(|l| leaf_hash(*l)).collect();
//! let tree = MerkleTree::from_leaf_hashes(leaves.clone());
//! let proof = tree.proof(4).expect("leaf 4 is in the tree");
//! assert_eq!(proof.len(), 1); // the last of five leaves sits right under the root
//! assert!(verify_inclusion(&leaves[4], 4, 5, &proof, &tree.root()).is_ok());
//! assert!(verify_inclusion(&leaves[4], 3, 5, &proof, &tree.root()).is_err());
//! ```

use sha2::{Digest, Sha256};

/// Length of a SHA-256 hash, and so of every leaf hash, node hash, root and audit-path element.
pub const HASH_LEN: usize = 32;

/// A SHA-256 hash: a leaf hash, a node hash or a root.
pub type Hash = [u8; HASH_LEN];

/// The byte prefixed to a leaf before hashing (RFC 9162 §2.1.1).
pub const LEAF_PREFIX: u8 = 0x00;

/// The byte prefixed to two child hashes before hashing (RFC 9162 §2.1.1).
pub const NODE_PREFIX: u8 = 0x01;

/// The leaf hash of `leaf`: `SHA-256(0x00 || leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([LEAF_PREFIX]);
    hasher.update(leaf);
    hasher.finalize().into()
}

/// The hash of an inner node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([NODE_PREFIX]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The root of the empty tree, `SHA-256()` (RFC 9162 §2.1.1). A manifest never has zero
/// entries; this is here so that every slice of leaf hashes has a defined root.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The level above `level`: each pair of neighbours hashed together, left to right, and an odd
/// last node carried up unchanged. Carrying the odd node up is exactly RFC 9162's split at the
/// largest power of two below `n`: the left subtrees are always complete.
fn next_level(level: &[Hash]) -> Vec<Hash> {
    let pairs = level.chunks_exact(2);
    let odd = pairs.remainder().first().copied();
    // chunks_exact(2) yields slices of exactly two hashes.
    pairs
        .map(|pair| node_hash(&pair[0], &pair[1]))
        .chain(odd)
        .collect()
}

/// The Merkle tree hash (MTH, RFC 9162 §2.1.1) of these leaf hashes, in O(n) hashes and n / 2
/// hashes of memory. [`MerkleTree`] keeps every level instead, for audit paths.
pub fn root(leaf_hashes: &[Hash]) -> Hash {
    match leaf_hashes {
        [] => empty_root(),
        [only] => *only,
        _ => {
            let mut level = next_level(leaf_hashes);
            while level.len() > 1 {
                level = next_level(&level);
            }
            level.first().copied().unwrap_or_else(empty_root)
        }
    }
}

/// The number of hashes in the audit path of leaf `index` in a tree of `size` leaves, or `None`
/// if `index` is not below `size`. At most [`max_audit_path_len`]`(size)`; less for some leaves
/// of a tree whose size is not a power of two (the last of five leaves has a path of one hash).
pub fn audit_path_len(index: u64, size: u64) -> Option<usize> {
    if index >= size {
        return None;
    }
    let (mut index, mut size, mut len) = (index, size, 0);
    while size > 1 {
        // The sibling exists unless this node is the odd last one, carried up unchanged.
        if index ^ 1 < size {
            len += 1;
        }
        index >>= 1;
        size = size.div_ceil(2);
    }
    Some(len)
}

/// The longest audit path in a tree of `size` leaves: ⌈log2 size⌉, and 0 for one leaf (or none).
pub fn max_audit_path_len(size: u64) -> usize {
    match size {
        0 | 1 => 0,
        // At most 64, so the cast is exact.
        _ => (u64::BITS - (size - 1).leading_zeros()) as usize,
    }
}

/// Why an audit path does not prove that a leaf is in a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is not below the tree size {size}")]
    IndexOutOfRange {
        /// The leaf index claimed.
        index: u64,
        /// The number of leaves in the tree.
        size: u64,
    },
    /// The path has more or fewer hashes than this leaf's path in a tree of this size.
    #[error("the audit path has {found} hashes; leaf {index} of {size} needs {expected}")]
    WrongPathLength {
        /// The leaf index.
        index: u64,
        /// The number of leaves in the tree.
        size: u64,
        /// The number of hashes given.
        found: usize,
        /// The number of hashes this leaf's path has.
        expected: usize,
    },
    /// The path, applied to the leaf hash, gives a different root.
    #[error("the audit path does not lead to the root")]
    RootMismatch,
}

/// Verifies that `leaf_hash` is leaf `index` of the tree of `size` leaves whose root is `root`,
/// given its audit path `path`, bottom first. This is the algorithm of RFC 9162 §2.1.3.2:
///
/// 1. `index` ≥ `size`: fail ([`ProofError::IndexOutOfRange`]).
/// 2. `fn = index`, `sn = size − 1`, `r = leaf_hash`.
/// 3. For each `p` in `path`: if `sn` is 0, fail (the path is too long). If `fn` is odd or
///    `fn == sn`, `r = node_hash(p, r)` and then, while `fn` is even and not 0, shift `fn` and
///    `sn` right by one; otherwise `r = node_hash(r, p)`. Then shift `fn` and `sn` right by one.
/// 4. Succeed if `sn` is 0 (else the path was too short) and `r == root`.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    path: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    let wrong_length = || ProofError::WrongPathLength {
        index,
        size,
        found: path.len(),
        expected: audit_path_len(index, size).unwrap_or(0),
    };
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut f, mut s, mut r) = (index, size - 1, *leaf_hash);
    for p in path {
        if s == 0 {
            return Err(wrong_length());
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(wrong_length());
    }
    if &r != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// A Merkle tree with all of its levels, for the root and every leaf's audit path.
///
/// Built once from the leaf hashes in O(n) hashes; it holds about 2n hashes (64 MiB at
/// 2^20 leaves). [`proof`](Self::proof) then costs O(log n) with no hashing, so the audit paths
/// of all `n` leaves cost O(n log n) in total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    /// `levels[0]` holds the leaf hashes; each next level is [`next_level`] of the one below;
    /// the last holds the root alone (or nothing, for an empty tree).
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    /// Builds the tree over `leaf_hashes`, in order.
    pub fn from_leaf_hashes(leaf_hashes: Vec<Hash>) -> Self {
        let mut levels = vec![leaf_hashes];
        loop {
            let above = match levels.last() {
                Some(top) if top.len() > 1 => next_level(top),
                _ => break,
            };
            levels.push(above);
        }
        Self { levels }
    }

    /// The number of leaves.
    pub fn len(&self) -> usize {
        self.levels.first().map_or(0, Vec::len)
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The root: the Merkle tree hash of all leaves ([`empty_root`] for no leaves).
    pub fn root(&self) -> Hash {
        self.levels
            .last()
            .and_then(|top| top.first())
            .copied()
            .unwrap_or_else(empty_root)
    }

    /// The hash of leaf `index`, if there is one.
    pub fn leaf_hash(&self, index: usize) -> Option<&Hash> {
        self.levels.first().and_then(|leaves| leaves.get(index))
    }

    /// The audit path of leaf `index` (RFC 9162 §2.1.3.1, `PATH(index, D[n])`): the sibling
    /// hashes from the leaf up to the root, bottom first, skipping levels where the node is
    /// carried up without a sibling. `None` if `index` is not below [`len`](Self::len).
    pub fn proof(&self, index: usize) -> Option<Vec<Hash>> {
        if index >= self.len() {
            return None;
        }
        let below_root = self.levels.split_last().map_or(&[][..], |(_, below)| below);
        let mut path = Vec::with_capacity(below_root.len());
        let mut at = index;
        for level in below_root {
            if let Some(sibling) = level.get(at ^ 1) {
                path.push(*sibling);
            }
            at >>= 1;
        }
        Some(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leaves of the Certificate Transparency reference tests.
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];

    /// MTH of the first n of those leaves, n = 1 to 8, as published with the Certificate
    /// Transparency reference implementations' tests (and recomputed independently).
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn unhex(text: &str) -> Vec<u8> {
        crate::hex::decode_vec(text).unwrap()
    }

    fn leaf(i: usize) -> Hash {
        leaf_hash(&unhex(LEAVES[i]))
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(leaf).collect()
    }

    fn n(left: Hash, right: Hash) -> Hash {
        node_hash(&left, &right)
    }

    /// MTH straight from RFC 9162 §2.1.1: split at the largest power of two below n.
    fn reference_root(hashes: &[Hash]) -> Hash {
        match hashes {
            [] => empty_root(),
            [only] => *only,
            _ => {
                let k = split(hashes.len());
                n(reference_root(&hashes[..k]), reference_root(&hashes[k..]))
            }
        }
    }

    /// PATH straight from RFC 9162 §2.1.3.1.
    fn reference_path(m: usize, hashes: &[Hash]) -> Vec<Hash> {
        if hashes.len() <= 1 {
            return Vec::new();
        }
        let k = split(hashes.len());
        let (mut path, sibling) = if m < k {
            (
                reference_path(m, &hashes[..k]),
                reference_root(&hashes[k..]),
            )
        } else {
            (
                reference_path(m - k, &hashes[k..]),
                reference_root(&hashes[..k]),
            )
        };
        path.push(sibling);
        path
    }

    /// The largest power of two below `len` (len ≥ 2).
    fn split(len: usize) -> usize {
        let mut k = 1;
        while k * 2 < len {
            k *= 2;
        }
        k
    }

    #[test]
    fn leaf_and_node_hashes_are_domain_separated_sha256() {
        assert_eq!(leaf_hash(b"abc").to_vec(), {
            let mut v = vec![0u8];
            v.extend_from_slice(b"abc");
            Sha256::digest(&v).to_vec()
        });
        let (a, b) = (leaf(1), leaf(2));
        let mut v = vec![1u8];
        v.extend_from_slice(&a);
        v.extend_from_slice(&b);
        assert_eq!(node_hash(&a, &b).to_vec(), Sha256::digest(&v).to_vec());
        assert_ne!(leaf_hash(&v[1..]), node_hash(&a, &b));
    }

    #[test]
    fn small_trees_have_the_hand_composed_roots() {
        let l = leaves(8);
        let expected = [
            (1, l[0]),
            (2, n(l[0], l[1])),
            (3, n(n(l[0], l[1]), l[2])),
            (5, n(n(n(l[0], l[1]), n(l[2], l[3])), l[4])),
            (
                7,
                n(n(n(l[0], l[1]), n(l[2], l[3])), n(n(l[4], l[5]), l[6])),
            ),
            (
                8,
                n(
                    n(n(l[0], l[1]), n(l[2], l[3])),
                    n(n(l[4], l[5]), n(l[6], l[7])),
                ),
            ),
        ];
        for (size, root_hash) in expected {
            assert_eq!(root(&l[..size]), root_hash, "root() of {size}");
            let tree = MerkleTree::from_leaf_hashes(l[..size].to_vec());
            assert_eq!(tree.root(), root_hash, "MerkleTree of {size}");
            assert_eq!(tree.len(), size);
        }
    }

    #[test]
    fn small_trees_have_the_published_reference_roots() {
        for (size, expected) in (1..=8).zip(ROOTS) {
            assert_eq!(root(&leaves(size)).to_vec(), unhex(expected), "{size}");
        }
        assert_eq!(
            root(&[]).to_vec(),
            unhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert!(MerkleTree::from_leaf_hashes(Vec::new()).is_empty());
        assert_eq!(
            MerkleTree::from_leaf_hashes(Vec::new()).root(),
            empty_root()
        );
    }

    #[test]
    fn small_trees_have_the_hand_composed_audit_paths() {
        let l = leaves(8);
        let paths: [(usize, usize, Vec<Hash>); 8] = [
            (1, 0, vec![]),
            (2, 1, vec![l[0]]),
            (3, 2, vec![n(l[0], l[1])]),
            (3, 0, vec![l[1], l[2]]),
            (5, 4, vec![n(n(l[0], l[1]), n(l[2], l[3]))]),
            (5, 2, vec![l[3], n(l[0], l[1]), l[4]]),
            (7, 6, vec![n(l[4], l[5]), n(n(l[0], l[1]), n(l[2], l[3]))]),
            (
                8,
                5,
                vec![l[4], n(l[6], l[7]), n(n(l[0], l[1]), n(l[2], l[3]))],
            ),
        ];
        for (size, index, expected) in paths {
            let tree = MerkleTree::from_leaf_hashes(l[..size].to_vec());
            assert_eq!(tree.proof(index).unwrap(), expected, "{index} of {size}");
            verify_inclusion(
                &l[index],
                index as u64,
                size as u64,
                &expected,
                &tree.root(),
            )
            .unwrap();
        }
    }

    #[test]
    fn trees_match_the_recursive_rfc_definition_for_every_size_up_to_70() {
        for size in 1..=70 {
            let hashes: Vec<Hash> = (0..size).map(|i| leaf_hash(&[i as u8])).collect();
            let tree = MerkleTree::from_leaf_hashes(hashes.clone());
            let root_hash = reference_root(&hashes);
            assert_eq!(tree.root(), root_hash, "{size}");
            assert_eq!(root(&hashes), root_hash, "{size}");
            for index in 0..size {
                let path = tree.proof(index).unwrap();
                assert_eq!(path, reference_path(index, &hashes), "{index} of {size}");
                assert_eq!(
                    Some(path.len()),
                    audit_path_len(index as u64, size as u64),
                    "{index} of {size}"
                );
                assert!(path.len() <= max_audit_path_len(size as u64));
                verify_inclusion(&hashes[index], index as u64, size as u64, &path, &root_hash)
                    .unwrap();
            }
            assert_eq!(tree.proof(size), None);
        }
    }

    #[test]
    fn a_proof_does_not_verify_for_a_neighbouring_index_another_size_or_another_leaf() {
        for size in [2u64, 3, 5, 7, 8, 13] {
            let hashes: Vec<Hash> = (0..size).map(|i| leaf_hash(&i.to_be_bytes())).collect();
            let tree = MerkleTree::from_leaf_hashes(hashes.clone());
            let root_hash = tree.root();
            for index in 0..size {
                let i = index as usize;
                let path = tree.proof(i).unwrap();
                let leaf = hashes[i];
                for other in [index.wrapping_sub(1), index + 1] {
                    assert!(
                        verify_inclusion(&leaf, other, size, &path, &root_hash).is_err(),
                        "{index} of {size} verified as {other}"
                    );
                }
                // A size for which this leaf's path has another shape fails. (A size with the
                // same shape gives the same computation: the root, signed with the size, is what
                // ties the two together; see the test below.)
                for other_size in (0..=2 * size).filter(|&s| s != size) {
                    if audit_path_len(index, other_size) != Some(path.len()) {
                        assert!(
                            matches!(
                                verify_inclusion(&leaf, index, other_size, &path, &root_hash),
                                Err(ProofError::WrongPathLength { .. }
                                    | ProofError::IndexOutOfRange { .. })
                            ),
                            "{index} of {size} verified in a tree of {other_size}"
                        );
                    }
                }
                assert!(verify_inclusion(&leaf, index, size * 2, &path, &root_hash).is_err());
                let mut changed = leaf;
                changed[0] ^= 1;
                assert_eq!(
                    verify_inclusion(&changed, index, size, &path, &root_hash),
                    Err(ProofError::RootMismatch)
                );
                // Another leaf's hash at this index, and this leaf's hash with another's path.
                let neighbour = (i + 1) % hashes.len();
                assert!(
                    verify_inclusion(&hashes[neighbour], index, size, &path, &root_hash).is_err()
                );
                for (k, _) in path.iter().enumerate() {
                    let mut bent = path.clone();
                    bent[k][31] ^= 0x80;
                    assert_eq!(
                        verify_inclusion(&leaf, index, size, &bent, &root_hash),
                        Err(ProofError::RootMismatch)
                    );
                }
            }
        }
    }

    #[test]
    fn the_size_is_bound_by_the_root_so_a_same_shaped_path_verifies_only_against_its_own_root() {
        // Leaf 0 has a path of three left turns in every tree of 5 to 8 leaves, so RFC 9162's
        // algorithm computes the same root for all four sizes: the path alone does not fix the
        // size. A manifest signs the size (the entry count) together with the root.
        let hashes = leaves(8);
        let seven = MerkleTree::from_leaf_hashes(hashes[..7].to_vec());
        let path = seven.proof(0).unwrap();
        for size in 5..=8 {
            assert!(verify_inclusion(&hashes[0], 0, size, &path, &seven.root()).is_ok());
        }
        let eight = MerkleTree::from_leaf_hashes(hashes);
        assert_eq!(
            verify_inclusion(&leaf(0), 0, 8, &path, &eight.root()),
            Err(ProofError::RootMismatch)
        );
    }

    #[test]
    fn a_path_of_the_wrong_length_or_an_index_past_the_end_is_named_as_such() {
        let hashes = leaves(5);
        let tree = MerkleTree::from_leaf_hashes(hashes.clone());
        let root_hash = tree.root();
        let path = tree.proof(2).unwrap();
        let mut longer = path.clone();
        longer.push(root_hash);
        assert_eq!(
            verify_inclusion(&hashes[2], 2, 5, &longer, &root_hash),
            Err(ProofError::WrongPathLength {
                index: 2,
                size: 5,
                found: 4,
                expected: 3
            })
        );
        assert!(matches!(
            verify_inclusion(&hashes[2], 2, 5, &path[..2], &root_hash),
            Err(ProofError::WrongPathLength { found: 2, .. })
        ));
        assert_eq!(
            verify_inclusion(&hashes[2], 5, 5, &path, &root_hash),
            Err(ProofError::IndexOutOfRange { index: 5, size: 5 })
        );
        assert_eq!(
            verify_inclusion(&hashes[0], 0, 0, &[], &root_hash),
            Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
        );
    }

    #[test]
    fn path_lengths_are_bounded_by_the_ceiling_of_log2() {
        for (size, bound) in [(1u64, 0), (2, 1), (3, 2), (4, 2), (5, 3), (8, 3), (9, 4)] {
            assert_eq!(max_audit_path_len(size), bound, "{size}");
        }
        assert_eq!(max_audit_path_len(100_000), 17);
        assert_eq!(max_audit_path_len(1 << 20), 20);
        assert_eq!(max_audit_path_len((1 << 20) + 1), 21);
        assert_eq!(max_audit_path_len(u64::MAX), 64);
        assert_eq!(audit_path_len(4, 5), Some(1));
        assert_eq!(audit_path_len(5, 5), None);
    }
}
