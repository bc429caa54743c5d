"""The method as pure functions over tensors and plain data: no Ray, no files, no network."""
