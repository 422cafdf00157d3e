//! The one topology model that every host source feeds: NUMA nodes, GPUs, links, each fact with
//! the source it came from, and warnings where sources disagree.
