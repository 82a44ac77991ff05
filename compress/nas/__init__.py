"""DNS-Rec search pieces: search space, controllers, supernet, bilevel search, slicing."""
