"""The reduce side: kNN strategies, the rule book, graph, tables, the distributed waves
and their exchange, the saved index."""
