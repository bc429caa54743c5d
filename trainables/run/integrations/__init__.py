"""The critical period inside other trainers: Lightning and Hugging Face callbacks."""
