"""ClipBERT: grid features of sparsely sampled frames, a joint BERT, clip consensus."""
