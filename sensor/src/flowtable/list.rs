//! Doubly linked lists threaded through the flow table's slots by slot
//! number: 8 bytes per slot and list, O(1) to append, unlink and move to
//! the back, and no allocation after the slots exist.

/// The slot number that means "none".
const NIL: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Link {
    prev: u32,
    next: u32,
}

const DETACHED: Link = Link {
    prev: NIL,
    next: NIL,
};

/// One list over slot numbers, oldest at the head.
#[derive(Debug)]
pub struct List {
    head: u32,
    tail: u32,
    len: usize,
    links: Vec<Link>,
}

impl List {
    pub fn new() -> List {
        List {
            head: NIL,
            tail: NIL,
            len: 0,
            links: Vec::new(),
        }
    }

    /// Slots in the list.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the list is empty.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The oldest slot.
    pub fn head(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }

    /// True when `slot` is in the list.
    pub fn contains(&self, slot: u32) -> bool {
        self.head == slot || self.links.get(slot as usize).is_some_and(|l| l.prev != NIL)
    }

    /// Appends `slot`, which must not be in the list.
    pub fn push_back(&mut self, slot: u32) {
        let i = slot as usize;
        if self.links.len() <= i {
            self.links.resize(i + 1, DETACHED);
        }
        self.links[i] = Link {
            prev: self.tail,
            next: NIL,
        };
        match self.tail {
            NIL => self.head = slot,
            t => self.links[t as usize].next = slot,
        }
        self.tail = slot;
        self.len += 1;
    }

    /// Removes `slot` if it is in the list.
    pub fn unlink(&mut self, slot: u32) {
        if !self.contains(slot) {
            return;
        }
        let Link { prev, next } = self.links[slot as usize];
        match prev {
            NIL => self.head = next,
            p => self.links[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.links[n as usize].prev = prev,
        }
        self.links[slot as usize] = DETACHED;
        self.len -= 1;
    }

    /// Moves `slot` (in the list or not) to the back.
    pub fn move_to_back(&mut self, slot: u32) {
        if self.tail == slot {
            return;
        }
        self.unlink(slot);
        self.push_back(slot);
    }

    /// Empties the list.
    pub fn clear(&mut self) {
        self.head = NIL;
        self.tail = NIL;
        self.len = 0;
        self.links.iter_mut().for_each(|l| *l = DETACHED);
    }

    /// Slots from oldest to newest.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let mut cur = self.head;
        std::iter::from_fn(move || {
            let slot = (cur != NIL).then_some(cur)?;
            cur = self.links[slot as usize].next;
            Some(slot)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(l: &List) -> Vec<u32> {
        l.iter().collect()
    }

    #[test]
    fn append_unlink_and_move() {
        let mut l = List::new();
        for s in [3, 0, 7, 1] {
            l.push_back(s);
        }
        assert_eq!(
            (order(&l), l.len(), l.head()),
            (vec![3, 0, 7, 1], 4, Some(3))
        );
        l.move_to_back(0);
        assert_eq!(order(&l), vec![3, 7, 1, 0]);
        l.unlink(3);
        l.unlink(0);
        l.unlink(0);
        assert_eq!((order(&l), l.len()), (vec![7, 1], 2));
        assert!(l.contains(7) && l.contains(1) && !l.contains(3) && !l.contains(9));
        l.move_to_back(5);
        assert_eq!(order(&l), vec![7, 1, 5]);
        l.unlink(7);
        l.unlink(1);
        l.unlink(5);
        assert_eq!((l.head(), l.len()), (None, 0));
        l.push_back(2);
        assert_eq!(order(&l), vec![2]);
        l.clear();
        assert_eq!((order(&l), l.len(), l.contains(2)), (vec![], 0, false));
    }
}
