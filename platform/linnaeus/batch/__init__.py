"""Ray Data batch jobs around the serving logic: label banks for a model, and bulk prediction over buckets."""
