"""What a user does with a finished run: keep/remove lists, folder actions, the webdataset
rewrite, evaluation."""
