"""Serving: what a shop calls. Recommendations for a user, an item, an anonymous session; re-ranking of
a given list; visitor states; the online store (table ``recs``) and batch precomputation."""
