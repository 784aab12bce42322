"""Party side of fedhh: party agent, user report SDK, Flower ClientApp."""
