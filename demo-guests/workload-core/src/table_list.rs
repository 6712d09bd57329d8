//! [`TableLists`]: which page tables each address space made, kept
//! outside the spaces themselves.
//!
//! Both platforms build their address spaces out of page tables they
//! take from a pool, and both must remember which tables a space took, to
//! unlink and give them back when it is destroyed (leaves first, so each
//! table is empty when its link goes). What a platform remembers about a
//! table differs (natively its frame and the entry that links it; the
//! paravirtualized build also its address prefix, so that finding a table
//! reads no memory), so the element type `T` is the platform's; the
//! bookkeeping is the same and lives here.
//!
//! The lists live in one array, not in the spaces, because a space moves
//! with its process (into the process table, out of it on exit), and under
//! `-icount` every byte a `memcpy` moves counts as an instruction: a space
//! holds only a small handle ([`ListId`]) into this array. A list is
//! emptied by resetting its length, never by rewriting its entries.

use crate::PlatformError;

/// Most tables one list holds: the tables below one space's root.
pub const MAX_TABLES: usize = 32;

/// One space's list, by its index in [`TableLists`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListId(usize);

/// The tables of one space: the first `len` entries of `tables`.
#[derive(Clone, Copy)]
pub struct TableList<T> {
    len: usize,
    tables: [T; MAX_TABLES],
}

impl<T> TableList<T> {
    /// The tables, in the order they were pushed.
    pub fn tables(&self) -> &[T] {
        &self.tables[..self.len]
    }

    /// Whether it holds [`MAX_TABLES`] tables: a space that needs one more
    /// fails with [`PlatformError::TooManyTables`] (checked before a table
    /// is taken from its pool, so that nothing needs undoing).
    pub fn is_full(&self) -> bool {
        self.len == MAX_TABLES
    }

    /// Adds `table`.
    ///
    /// # Panics
    ///
    /// If the list is full (see [`TableList::is_full`]).
    pub fn push(&mut self, table: T) {
        self.tables[self.len] = table;
        self.len += 1;
    }

    /// Forgets every table (they are remembered elsewhere, or never torn
    /// down).
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// `LISTS` lists of at most [`MAX_TABLES`] tables each (see the module docs).
pub struct TableLists<T, const LISTS: usize> {
    lists: [TableList<T>; LISTS],
    in_use: [bool; LISTS],
}

impl<T: Copy, const LISTS: usize> TableLists<T, LISTS> {
    /// No list in use; every slot holds `unused` (never read as a table).
    pub const fn new(unused: T) -> Self {
        TableLists { lists: [TableList { len: 0, tables: [unused; MAX_TABLES] }; LISTS], in_use: [false; LISTS] }
    }

    /// An empty list for a new space, or [`PlatformError::TooManyTables`]
    /// when all `LISTS` are in use.
    pub fn take(&mut self) -> Result<ListId, PlatformError> {
        let index = self.in_use.iter().position(|used| !used).ok_or(PlatformError::TooManyTables)?;
        self.in_use[index] = true;
        self.lists[index].len = 0;
        Ok(ListId(index))
    }

    /// Frees a list (its space is gone).
    pub fn give_back(&mut self, id: ListId) {
        self.in_use[id.0] = false;
    }

    /// List `id`.
    pub fn list(&self, id: ListId) -> &TableList<T> {
        &self.lists[id.0]
    }

    /// List `id`, to add tables to or clear.
    pub fn list_mut(&mut self, id: ListId) -> &mut TableList<T> {
        &mut self.lists[id.0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_taken_filled_and_given_back() {
        let mut lists: TableLists<u32, 2> = TableLists::new(0);
        let a = lists.take().unwrap();
        let b = lists.take().unwrap();
        assert_eq!(lists.take(), Err(PlatformError::TooManyTables));
        lists.list_mut(a).push(7);
        lists.list_mut(a).push(8);
        lists.list_mut(b).push(9);
        assert_eq!(lists.list(a).tables(), &[7, 8]);
        assert_eq!(lists.list(b).tables(), &[9]);
        lists.give_back(a);
        let again = lists.take().unwrap();
        assert_eq!(again, a);
        assert!(lists.list(again).tables().is_empty(), "a list taken again starts empty");
        lists.list_mut(b).clear();
        assert!(lists.list(b).tables().is_empty());
    }

    #[test]
    fn a_list_holds_max_tables() {
        let mut lists: TableLists<usize, 1> = TableLists::new(0);
        let id = lists.take().unwrap();
        let list = lists.list_mut(id);
        for table in 0..MAX_TABLES {
            assert!(!list.is_full());
            list.push(table);
        }
        assert!(list.is_full());
        assert_eq!(list.tables().len(), MAX_TABLES);
        assert_eq!(list.tables().last(), Some(&(MAX_TABLES - 1)));
    }

    #[test]
    #[should_panic]
    fn pushing_onto_a_full_list_panics() {
        let mut lists: TableLists<usize, 1> = TableLists::new(0);
        let id = lists.take().unwrap();
        let list = lists.list_mut(id);
        for table in 0..=MAX_TABLES {
            list.push(table);
        }
    }
}
